// Drives chaosbot's Toxiproxy API with the unmodified toxiproxy-node-client, checking the
// traffic through the proxy at each step. Args: API base URL, echo upstream host:port.
"use strict";
const net = require("net");
const assert = require("assert");
const { Toxiproxy } = require("toxiproxy-node-client");

const [base, upstream] = process.argv.slice(2);

function step(name) {
  console.log("step:", name);
}

function roundTrip(listen) {
  const [host, port] = [listen.slice(0, listen.lastIndexOf(":")), Number(listen.slice(listen.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const s = net.connect({ host, port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => { s.destroy(); reject(new Error("no echo within 5s")); }, 5000);
    s.on("connect", () => s.write("ping"));
    s.on("data", (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4) {
        clearTimeout(timer);
        s.destroy();
        assert.strictEqual(got.toString(), "ping");
        resolve(Number(process.hrtime.bigint() - started) / 1e9);
      }
    });
    s.on("error", (e) => { clearTimeout(timer); reject(e); });
    s.on("close", () => { clearTimeout(timer); if (got.length < 4) reject(new Error("closed before the echo")); });
  });
}

async function refused(listen) {
  try {
    await roundTrip(listen);
    return false;
  } catch (e) {
    return true;
  }
}

async function fast(listen) {
  const rt = await roundTrip(listen);
  assert.ok(rt < 0.15, `round trip ${rt}s with no toxic`);
}

async function slow(listen, atLeast) {
  const rt = await roundTrip(listen);
  assert.ok(rt >= atLeast, `round trip ${rt}s, expected at least ${atLeast}s`);
}

async function main() {
  const toxiproxy = new Toxiproxy(base);
  step("version");
  assert.ok((await toxiproxy.getVersion()).includes("version"));

  step("create");
  let proxy = await toxiproxy.createProxy({ name: "node_api", listen: "127.0.0.1:0", upstream });
  assert.ok(!proxy.listen.endsWith(":0"), proxy.listen);
  await fast(proxy.listen);

  step("list");
  const all = await toxiproxy.getAll();
  assert.ok(all.node_api, Object.keys(all));
  assert.strictEqual(all.node_api.upstream, upstream);
  assert.strictEqual((await toxiproxy.get("node_api")).enabled, true);

  step("duplicate proxy");
  await assert.rejects(toxiproxy.createProxy({ name: "node_api", listen: "127.0.0.1:0", upstream }), /409/);

  step("toxic added");
  let toxic = await proxy.addToxic({
    name: "lag", type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 300, jitter: 0 },
  });
  assert.strictEqual(toxic.name, "lag");
  await slow(proxy.listen, 0.3);

  step("toxic read back");
  toxic = await proxy.getToxic("lag");
  assert.deepStrictEqual(toxic.toJson(), {
    attributes: { latency: 300, jitter: 0 }, name: "lag", stream: "downstream", toxicity: 1, type: "latency",
  });
  await assert.rejects(proxy.getToxic("nope"), /404/);

  step("toxic updated");
  toxic = await toxic.update({ attributes: { latency: 120 } });
  assert.deepStrictEqual(toxic.attributes, { latency: 120, jitter: 0 });
  const rt = await roundTrip(proxy.listen);
  assert.ok(rt >= 0.12 && rt < 0.3, `round trip ${rt}s after the update to 120 ms`);

  step("toxic removed");
  await toxic.remove();
  await assert.rejects(proxy.getToxic("lag"), /404/);
  await fast(proxy.listen);

  step("reset");
  await proxy.addToxic({ name: "lag2", type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 300 } });
  await slow(proxy.listen, 0.3);
  await toxiproxy.reset();
  assert.deepStrictEqual((await toxiproxy.getAll()).node_api.toJson().enabled, true);
  await assert.rejects(proxy.getToxic("lag2"), /404/);
  await fast(proxy.listen);

  step("disabled");
  proxy = await proxy.update({ enabled: false, listen: proxy.listen, upstream });
  assert.strictEqual(proxy.enabled, false);
  assert.ok(await refused(proxy.listen));
  proxy = await proxy.update({ enabled: true, listen: proxy.listen, upstream });
  assert.strictEqual(proxy.enabled, true);
  await fast(proxy.listen);

  step("populate");
  const populated = await toxiproxy.populate([{ name: "node_pop", listen: "127.0.0.1:0", upstream }]);
  await fast(populated.node_pop.listen);
  await populated.node_pop.remove();

  step("destroyed");
  await proxy.remove();
  await assert.rejects(toxiproxy.get("node_api"), /404/);
  assert.ok(await refused(proxy.listen));

  console.log("ALL STEPS PASSED");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
