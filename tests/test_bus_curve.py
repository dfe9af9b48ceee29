"""CURVE: only subscribers holding an admitted client key receive anything."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from mia.engine.bus import BusConfig, CurveConfig, Publisher, Subscriber, generate_curve_keys
from mia.engine.config import convert
from mia.engine.errors import ConfigError
from mia.engine.events import Trade

ANY_PORT = "tcp://127.0.0.1:*"


def trade(i: int) -> Trade:
    return Trade(ts_event=i, ts_recv=i, instrument=1, price=5000.0, size=1.0, side=1)


def received_while_publishing(pub: Publisher, subs: list[Subscriber], seconds: float) -> list[int]:
    """Publish every 10 ms for `seconds` while each subscriber drains; count what each got."""
    counts = [0] * len(subs)
    stop = threading.Event()

    def publish():
        seq = 0
        while not stop.is_set():
            pub.publish("live", seq, trade(seq))
            seq += 1
            time.sleep(0.01)

    # zmq sockets are not thread-safe: only the publisher moves to the thread.
    t = threading.Thread(target=publish, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for i, sub in enumerate(subs):
                if sub.recv(timeout_s=0.01) is not None:
                    counts[i] += 1
    finally:
        stop.set()
        t.join(timeout=5)
    return counts


def test_right_key_receives_no_key_and_wrong_keys_receive_nothing():
    keys = generate_curve_keys()
    stranger = generate_curve_keys()
    wrong_client = CurveConfig(server_public=keys.server_public, client_public=stranger.client_public,
                               client_secret=stranger.client_secret)
    wrong_server = CurveConfig(server_public=stranger.server_public,
                               client_public=keys.client_public, client_secret=keys.client_secret)
    with Publisher(ANY_PORT, curve=keys) as pub:
        subs = [Subscriber(pub.addr, curve=keys), Subscriber(pub.addr),
                Subscriber(pub.addr, curve=wrong_client), Subscriber(pub.addr, curve=wrong_server)]
        try:
            good, plain, wrong_c, wrong_s = received_while_publishing(pub, subs, seconds=1.5)
        finally:
            for sub in subs:
                sub.close()
    assert good > 20
    assert (plain, wrong_c, wrong_s) == (0, 0, 0)


def test_without_curve_on_either_side_delivery_is_plain():
    # Without CURVE on either side, delivery is plain (the default on loopback).
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr) as sub:
        (count,) = received_while_publishing(pub, [sub], seconds=0.5)
    assert count > 5


def test_keys_repr_hides_secrets_and_bad_keys_name_the_field_not_the_value():
    keys = generate_curve_keys()
    text = repr(keys) + str(keys)
    assert keys.server_secret not in text and keys.client_secret not in text
    assert keys.server_public in text
    bad = "~" + keys.client_secret[1:]  # "~" is not in the z85 alphabet
    with pytest.raises(ConfigError, match="client_secret") as info:
        CurveConfig(server_public=keys.server_public, client_secret=bad)
    assert bad not in str(info.value)
    with pytest.raises(ConfigError, match="server_secret"):
        msgspec.convert({"server_public": keys.server_public, "server_secret": "short"}, CurveConfig)


def test_keys_come_from_the_bus_table_and_an_empty_table_means_no_curve():
    keys = generate_curve_keys()
    cfg = convert({"curve": msgspec.to_builtins(keys)}, BusConfig)
    assert cfg.curve == keys
    with pytest.raises(ConfigError, match="server_secret"):
        convert({"curve": {"server_public": keys.server_public, "server_secret": "short"}},
                BusConfig)
    # an empty [bus.curve] table: plain delivery, as with no table at all
    with Publisher(ANY_PORT, curve=CurveConfig()) as pub, \
            Subscriber(pub.addr, curve=CurveConfig()) as sub:
        (count,) = received_while_publishing(pub, [sub], seconds=0.5)
    assert count > 5
    # client keys without the server's: an error, never a silent plain socket
    with pytest.raises(ConfigError, match="server_public"):
        Subscriber("tcp://127.0.0.1:1", curve=CurveConfig(client_public=keys.client_public,
                                                         client_secret=keys.client_secret))


def test_each_side_needs_its_own_secret():
    keys = generate_curve_keys()
    public_only = CurveConfig(server_public=keys.server_public, client_public=keys.client_public)
    with pytest.raises(ConfigError, match="server_secret"):
        Publisher(ANY_PORT, curve=public_only)
    with pytest.raises(ConfigError, match="client_secret"):
        Subscriber("tcp://127.0.0.1:1", curve=public_only)
