"""``harvester run`` (harvester/cli.py) against a live server: the harvester id it takes from its token."""
import subprocess

from harvesterhelp import QUEUE, Testbed, queue_config


def test_a_harvester_acts_as_the_harvester_its_token_is_bound_to(tmp_path):
    """The server holds a harvester token to the harvester of its name, so harvester takes its id from the token
    (made as 'h1' by the testbed) instead of host name plus digest, and refuses at start an id the token cannot
    speak for."""
    bed = Testbed(tmp_path, {QUEUE: queue_config()})
    try:
        bed.once()
        assert [row["harvester_id"] for row in bed.v1("harvester/list_instances")] == ["h1"]
        proc = subprocess.run(bed.argv("--once", "--harvester-id", "h2"), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "speaks for harvester h1 only" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    finally:
        bed.close()
