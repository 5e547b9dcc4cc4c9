"""The pilot's copy of the wire values (pilot/wire.py, standard library only) equals the server's."""
import minipanda.errors as server_side
import pilot.wire as pilot_side


def test_every_pilot_wire_value_equals_the_servers():
    names = [name for name in vars(pilot_side) if name.isupper() and name != "SOFTKILL"]
    assert set(names) >= {"SC_OK", "SC_NO_JOBS", "SC_FAILED", "TOBEKILLED", "PILOT_STATES"}
    for name in names:
        assert getattr(pilot_side, name) == getattr(server_side, name), name


def test_every_status_code_of_the_server_is_in_the_pilots_copy():
    server_codes = {name: value for name, value in vars(server_side).items() if name.startswith("SC_")}
    assert server_codes == {name: value for name, value in vars(pilot_side).items() if name.startswith("SC_")}
