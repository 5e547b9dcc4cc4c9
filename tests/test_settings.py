"""The task side's settings (minipanda.tasks.settings): ``--setting`` overrides, then the ``config`` table, then the
defaults; the table is read at each get, so an operator's change takes effect at a duty's next run. On SQLite and
PostgreSQL."""
import logging

import pytest

from minipanda.core import models
from minipanda.errors import SettingError
from minipanda.tasks import settings


def test_a_value_comes_from_the_override_then_the_config_table_then_the_default(database):
    read = settings.Settings({"period.settle": 0.5})
    assert read.get("generator.batch") == settings.DEFAULTS["generator.batch"]
    models.Config.insert(key="generator.batch", value="250").execute()
    models.Config.insert(key="period.settle", value="9").execute()
    assert read.get("generator.batch") == 250.0 and read.get_int("generator.batch") == 250
    assert read.get("period.settle") == 0.5  # the command line wins over the table
    models.Config.update(value="40").where(models.Config.key == "generator.batch").execute()
    assert read.get_int("generator.batch") == 40  # changed while the server runs: seen at the next read
    models.Config.delete().where(models.Config.key == "generator.batch").execute()
    assert read.get("generator.batch") == settings.DEFAULTS["generator.batch"]


def test_a_bad_value_in_the_config_table_is_said_and_the_default_used(database, caplog):
    models.Config.insert(key="watchdog.sent_timeout", value="soon").execute()
    models.Config.insert(key="scout.ram_margin", value="-1").execute()
    read = settings.Settings()
    with caplog.at_level(logging.WARNING, logger="minipanda.tasks.settings"):
        assert read.get("watchdog.sent_timeout") == settings.DEFAULTS["watchdog.sent_timeout"]
        assert read.get("scout.ram_margin") == settings.DEFAULTS["scout.ram_margin"]
    assert "watchdog.sent_timeout: expected a number, got 'soon'" in caplog.text
    assert "scout.ram_margin: must not be negative" in caplog.text


def test_overrides_are_checked_and_name_the_bad_one():
    assert settings.parse_overrides(["period.settle=0.5"]) == {"period.settle": 0.5}
    for bad, said in (("period.settle", "expected KEY=VALUE"), ("no.such=1", "unknown"),
                      ("period.settle=x", "expected a number"), ("period.settle=-1", "must not be negative")):
        with pytest.raises(SettingError, match=said):
            settings.parse_overrides([bad])
