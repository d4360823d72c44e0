"""Drives chaosbot's Toxiproxy API with the unmodified toxiproxy-python client, checking the
traffic through the proxy at each step. Args: API host, API port, echo upstream host:port."""
import socket
import sys
import time

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

host, port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def step(name):
    print("step:", name, flush=True)


def round_trip(listen):
    h, p = listen.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((h, int(p)), timeout=5) as s:
        s.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            assert chunk, "connection closed before the echo"
            got += chunk
        assert got == b"ping", got
    return time.monotonic() - started


def refused(listen):
    try:
        round_trip(listen)
        return False
    except OSError:
        return True


def fast(listen):
    rt = round_trip(listen)
    assert rt < 0.15, "round trip %.3fs with no toxic" % rt


def slow(listen, at_least):
    rt = round_trip(listen)
    assert rt >= at_least, "round trip %.3fs, expected at least %.3fs" % (rt, at_least)


server = Toxiproxy()
server.update_api_consumer(host, port)
step("running and version")
assert server.running()
assert b"version" in server.version()

step("create")
proxy = server.create(upstream=upstream, name="py_api", listen="127.0.0.1:0")
assert not proxy.listen.endswith(":0"), proxy.listen
fast(proxy.listen)

step("list")
listed = server.proxies()
assert "py_api" in listed and listed["py_api"].upstream == upstream, listed
assert listed["py_api"].enabled is True

step("duplicate proxy")
try:
    server.create(upstream=upstream, name="py_api")
    raise AssertionError("a duplicate proxy was accepted")
except ProxyExists:
    pass

step("toxic added")
proxy.add_toxic(type="latency", attributes={"latency": 300})
slow(proxy.listen, 0.3)

step("toxic read back")
toxic = proxy.get_toxic("latency_downstream")
assert toxic is not None
assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1.0)
assert toxic.attributes == {"latency": 300, "jitter": 0}, toxic.attributes

step("duplicate and invalid toxics")
try:
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    raise AssertionError("a duplicate toxic was accepted")
except ProxyExists:
    pass
try:
    proxy.add_toxic(type="earthquake")
    raise AssertionError("an unknown toxic type was accepted")
except InvalidToxic:
    pass

step("toxic updated")
# The Python client has no toxic update of its own: its API consumer posts it.
APIConsumer.post("/proxies/py_api/toxics/latency_downstream", json={"attributes": {"latency": 120}})
toxic = proxy.get_toxic("latency_downstream")
assert toxic.attributes == {"latency": 120, "jitter": 0}, toxic.attributes
rt = round_trip(proxy.listen)
assert 0.12 <= rt < 0.3, "round trip %.3fs after the update to 120 ms" % rt

step("toxic removed")
proxy.destroy_toxic("latency_downstream")
assert proxy.toxics() == {}
fast(proxy.listen)

step("reset")
proxy.add_toxic(type="latency", name="slow", stream="downstream", attributes={"latency": 300})
proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1000})
assert sorted(proxy.toxics()) == ["bandwidth_upstream", "slow"], proxy.toxics()
slow(proxy.listen, 0.3)
server.reset()
assert proxy.toxics() == {}
fast(proxy.listen)

step("disabled")
proxy.disable()
assert refused(proxy.listen)
assert server.get_proxy("py_api").enabled is False
proxy.enable()
fast(proxy.listen)
with proxy.down():
    assert refused(proxy.listen)
fast(proxy.listen)

step("destroyed")
assert proxy.destroy()
assert server.get_proxy("py_api") is None
assert refused(proxy.listen)
try:
    APIConsumer.get("/proxies/py_api")
    raise AssertionError("a destroyed proxy was found")
except NotFound:
    pass

print("ALL STEPS PASSED", flush=True)
