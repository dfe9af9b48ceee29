"""Config: TOML loading, unknown keys, secrets kept out of the fingerprint."""

import tomllib

import pytest

from mia.config import EXAMPLE_TOML, Config, config_from_dict, load_config
from mia.data.dtc.config import dtc_credentials
from mia.data.polygon.config import polygon_api_key
from mia.engine.config import fingerprint, redacted
from mia.engine.errors import ConfigError


def test_example_config_loads_and_is_typed():
    cfg = config_from_dict(tomllib.loads(EXAMPLE_TOML))
    assert [d.port for d in cfg.dtc] == [11099, 11100]
    assert cfg.dtc[0].symbols == ["ESZ6"]
    assert cfg.polygon.underlyings == ["SPX", "NDX"]
    assert cfg.log.fsync == "interval"


def test_unknown_key_is_an_error_naming_key_and_place(tmp_path):
    p = tmp_path / "mia.toml"
    p.write_text('[[dtc]]\nhots = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "hots" in str(err.value) and "dtc[0]" in str(err.value) and str(p) in str(err.value)


def test_bad_value_and_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="fsync"):
        config_from_dict({"log": {"fsync": "sometimes"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[dtc]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_wrong_type_error_does_not_echo_the_value():
    secret = "pk_live_ABCDEF0123456789"
    with pytest.raises(ConfigError) as err:
        config_from_dict({"polygon": {"api_key": [secret]}})
    assert secret not in str(err.value)


def test_fingerprint_ignores_secrets_but_not_settings():
    a = config_from_dict({"polygon": {"api_key": "one-secret"}, "dtc": [{"password": "pw1"}]})
    b = config_from_dict({"polygon": {"api_key": "other-secret"}, "dtc": [{"password": "pw2"}]})
    c = config_from_dict({"polygon": {"api_key": "one-secret", "poll_s": 30.0}})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)
    text = repr(redacted(a))
    assert "one-secret" not in text and "pw1" not in text and "<redacted>" in text


def test_secrets_fall_back_to_environment(monkeypatch):
    monkeypatch.setenv("POLYGON_API_KEY", "env-key")
    monkeypatch.setenv("MIA_DTC_USERNAME", "env-user")
    monkeypatch.setenv("MIA_DTC_PASSWORD", "env-pass")
    cfg = Config()
    assert polygon_api_key(cfg.polygon) == "env-key"
    assert dtc_credentials(config_from_dict({"dtc": [{}]}).dtc[0]) == ("env-user", "env-pass")
    own = config_from_dict({"polygon": {"api_key": "file-key"}})
    assert polygon_api_key(own.polygon) == "file-key"
