//! Toxiproxy's HTTP API on the agent: every route's shapes and status codes, traffic through
//! the proxies at each step, the guard-rail deadline, the seed, and the listener's config.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rig::{Agent, Answer, SECRET, Site, Via, apply, free_port, latency_step, spawn};

/// The test's agent: the site's targets on the socket, and the Toxiproxy API on a free
/// loopback port (`extra` lines go under `[toxiproxy]`).
pub async fn toxi_agent(site: &Site, extra: &str) -> (Agent, SocketAddr) {
    let api = free_port();
    let d = site.path().display();
    let text = format!(
        "name = \"web-1\"\nsocket = \"{d}/agent.sock\"\nsecret = \"{SECRET}\"\nstate_dir = \"{d}/state\"\n{}\n[toxiproxy]\nlisten = \"{api}\"\n{extra}\n",
        site.targets()
    );
    let cfg = site.path().join("agent-toxi.toml");
    std::fs::write(&cfg, text).unwrap();
    let agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        site.path(),
        Via::Unix(site.socket()),
        Some(SECRET),
    );
    agent.ready().await;
    (agent, api)
}

/// One request to the Toxiproxy API (no agent credentials: it has none, like Toxiproxy's).
pub async fn toxi(api: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Answer {
    crate::rig::request(&Via::Tcp(api), method, path, body, None, None)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn raw(api: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    crate::rig::raw_request(
        &Via::Tcp(api),
        method,
        path,
        bytes::Bytes::from(body.to_string()),
        None,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// An echo round trip through `addr`: its duration, or why it failed.
pub async fn round_trip(addr: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"ping" {
            return Err(format!("echoed {buf:?}"));
        }
        Ok(started.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "no echo within 5s".to_string())?
}

fn assert_error(a: &Answer, status: u16, starts: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.body["status"], status, "{:?}", a.body);
    let e = a.body["error"].as_str().unwrap_or("");
    assert!(
        e.starts_with(starts),
        "error {e:?} should start with {starts:?}"
    );
}

fn fast(rt: Result<Duration, String>) {
    let rt = rt.unwrap();
    assert!(rt < Duration::from_millis(150), "round trip {rt:?}");
}

fn slow(rt: Result<Duration, String>, at_least: u64) {
    let rt = rt.unwrap();
    assert!(rt >= Duration::from_millis(at_least), "round trip {rt:?}");
}

#[tokio::test]
async fn toxiproxy_routes_answer_with_its_shapes_and_codes_and_traffic_follows() {
    let site = Site::new().await;
    let (agent, api) = toxi_agent(&site, "").await;
    let echo = site.echo.to_string();

    let v = toxi(api, "GET", "/version", None).await;
    assert_eq!(v.status, 200);
    assert!(v.body["version"].as_str().is_some(), "{:?}", v.body);

    // The agent's own proxy is listed (a map by name).
    let all = toxi(api, "GET", "/proxies", None).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["api"]["listen"], site.proxy.to_string());
    assert_eq!(all.body["api"]["enabled"], true);

    // Create: port 0 answers with the port taken.
    let body = json!({"name": "web", "listen": "127.0.0.1:0", "upstream": echo});
    let made = toxi(api, "POST", "/proxies", Some(body.clone())).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let listen = made.body["listen"].as_str().unwrap().to_string();
    assert_ne!(listen.rsplit(':').next(), Some("0"), "{listen}");
    assert_eq!(made.body["upstream"], echo);
    assert_eq!(made.body["enabled"], true);
    assert_eq!(made.body["toxics"], json!([]));
    fast(round_trip(&listen).await);
    assert_error(
        &toxi(api, "POST", "/proxies", Some(body)).await,
        409,
        "proxy already exists",
    );
    let busy = json!({"name": "busy", "listen": site.proxy.to_string(), "upstream": echo});
    let busy = toxi(api, "POST", "/proxies", Some(busy)).await;
    assert_error(&busy, 500, "cannot listen on");
    let no_up = toxi(api, "POST", "/proxies", Some(json!({"name": "x"}))).await;
    assert_error(&no_up, 400, "missing required field: upstream");

    // A toxic with Toxiproxy's defaults: downstream, toxicity 1, named <type>_<stream>.
    let lat = json!({"type": "latency", "attributes": {"latency": 300}});
    let t = toxi(api, "POST", "/proxies/web/toxics", Some(lat.clone())).await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert_eq!(
        t.body,
        json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
            "toxicity": 1.0, "attributes": {"latency": 300, "jitter": 0}})
    );
    slow(round_trip(&listen).await, 300);
    let dup = toxi(api, "POST", "/proxies/web/toxics", Some(lat)).await;
    assert_error(&dup, 409, "toxic already exists");
    let bad_stream = json!({"type": "latency", "stream": "sideways"});
    let bs = toxi(api, "POST", "/proxies/web/toxics", Some(bad_stream)).await;
    assert_error(&bs, 400, "stream was invalid");
    let bad_type = json!({"type": "earthquake"});
    let bt = toxi(api, "POST", "/proxies/web/toxics", Some(bad_type)).await;
    assert_error(&bt, 400, "invalid toxic type");
    let bad_attr = json!({"type": "bandwidth", "attributes": {"rate": -1}});
    let ba = toxi(api, "POST", "/proxies/web/toxics", Some(bad_attr)).await;
    assert_error(&ba, 400, "bad request body");
    assert!(
        ba.body["error"].as_str().unwrap().contains("rate"),
        "{:?}",
        ba.body
    );

    // Read back, then a partial update keeps what it leaves out.
    let list = toxi(api, "GET", "/proxies/web/toxics", None).await;
    assert_eq!(list.body, json!([t.body.clone()]));
    let one = toxi(api, "GET", "/proxies/web/toxics/latency_downstream", None).await;
    assert_eq!(one.body, t.body);
    let patch = json!({"attributes": {"jitter": 10}});
    let path = "/proxies/web/toxics/latency_downstream";
    let up = toxi(api, "PATCH", path, Some(patch)).await;
    assert_eq!(up.status, 200, "{:?}", up.body);
    assert_eq!(up.body["attributes"], json!({"latency": 300, "jitter": 10}));
    assert_eq!(up.body["toxicity"], 1.0);
    slow(round_trip(&listen).await, 280);
    let lower = json!({"attributes": {"latency": 0, "jitter": 0}});
    let up = toxi(api, "POST", path, Some(lower)).await;
    assert_eq!(up.body["attributes"]["latency"], 0, "{:?}", up.body);
    fast(round_trip(&listen).await);
    assert_eq!(toxi(api, "DELETE", path, None).await.status, 204);
    assert_error(
        &toxi(api, "DELETE", path, None).await,
        404,
        "toxic not found",
    );
    assert_eq!(
        toxi(api, "GET", "/proxies/web/toxics", None).await.body,
        json!([])
    );

    // enabled: false is down (connections refused); the fields left out stay.
    let off = toxi(
        api,
        "PATCH",
        "/proxies/web",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    assert_eq!(
        (&off.body["enabled"], &off.body["listen"]),
        (&json!(false), &json!(listen))
    );
    assert_eq!(off.body["upstream"], echo);
    assert!(round_trip(&listen).await.is_err());
    let on = toxi(api, "POST", "/proxies/web", Some(json!({"enabled": true}))).await;
    assert_eq!(on.body["enabled"], true, "{:?}", on.body);
    fast(round_trip(&listen).await);

    // A run's toxic (under a lease) and this API's share the agent's proxy; both are listed,
    // only the run's owner changes its own, and reset removes only the API's.
    let held = agent
        .apply(&apply("r-1", 1, "f-1", latency_step(200), 30_000, 30_000))
        .await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    let slicer = json!({"type": "slicer", "name": "chop", "stream": "upstream",
        "attributes": {"average_size": 2, "delay": 100}});
    let t2 = toxi(api, "POST", "/proxies/api/toxics", Some(slicer)).await;
    assert_eq!(t2.status, 200, "{:?}", t2.body);
    assert_eq!(
        t2.body["attributes"],
        json!({"average_size": 2, "size_variation": 0, "delay": 100})
    );
    let names: Vec<Value> = toxi(api, "GET", "/proxies/api/toxics", None)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("slow-api"), json!("chop")]);
    let run_toxic = toxi(api, "DELETE", "/proxies/api/toxics/slow-api", None).await;
    assert_error(
        &run_toxic,
        409,
        "toxic `slow-api` belongs to a chaosbot run",
    );
    assert_error(
        &toxi(api, "DELETE", "/proxies/api", None).await,
        403,
        "proxy `api` is declared",
    );
    let rest = toxi(
        api,
        "POST",
        "/proxies/web/toxics",
        Some(json!({"type": "timeout"})),
    )
    .await;
    assert_eq!(rest.status, 200, "{:?}", rest.body);
    toxi(api, "POST", "/proxies/web", Some(json!({"enabled": false}))).await;
    assert_eq!(toxi(api, "POST", "/reset", None).await.status, 204);
    let web = toxi(api, "GET", "/proxies/web", None).await;
    assert_eq!(
        (&web.body["enabled"], &web.body["toxics"]),
        (&json!(true), &json!([]))
    );
    fast(round_trip(&listen).await);
    let api_toxics = toxi(api, "GET", "/proxies/api/toxics", None).await.body;
    assert_eq!(api_toxics.as_array().map(Vec::len), Some(1), "{api_toxics}");
    assert_eq!(api_toxics[0]["name"], "slow-api");
    slow(round_trip(&site.proxy.to_string()).await, 200);

    // Populate: a list in, {"proxies": [...]} out; a missing field names the entry.
    let pop = json!([{"name": "p1", "listen": "127.0.0.1:0", "upstream": echo}]);
    let p = toxi(api, "POST", "/populate", Some(pop)).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let p1 = p.body["proxies"][0]["listen"].as_str().unwrap().to_string();
    fast(round_trip(&p1).await);
    let bad = json!([{"name": "p2", "upstream": echo}, {"name": "p3"}]);
    let p = toxi(api, "POST", "/populate", Some(bad)).await;
    assert_error(&p, 400, "missing required field: upstream at proxy 2");
    assert_eq!(p.body["proxies"], json!([]));

    // Unknown names, routes and methods, bad bodies, browsers.
    assert_error(
        &toxi(api, "GET", "/proxies/nope", None).await,
        404,
        "proxy not found",
    );
    let nt = toxi(api, "GET", "/proxies/web/toxics/nope", None).await;
    assert_error(&nt, 404, "toxic not found");
    assert_error(
        &toxi(api, "GET", "/nope", None).await,
        404,
        "no Toxiproxy route GET /nope",
    );
    assert_error(
        &toxi(api, "PUT", "/proxies", None).await,
        405,
        "method PUT is not allowed",
    );
    let mal = raw(api, "POST", "/proxies", "{\"name\": ").await;
    assert_error(&mal, 400, "bad request body: EOF while parsing");
    let browser = browser_get(api).await;
    assert!(browser.starts_with("HTTP/1.1 403"), "{browser}");
    assert!(browser.contains("User agent not allowed"), "{browser}");

    // A proxy made here is a target like any other: a run may hold a toxic on it, and then
    // it is not deleted under the run.
    let mut on_web = latency_step(50);
    on_web.target = "web".into();
    let held = agent
        .apply(&apply("r-2", 1, "f-2", on_web, 30_000, 30_000))
        .await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    slow(round_trip(&listen).await, 50);
    let busy = toxi(api, "DELETE", "/proxies/web", None).await;
    assert_error(
        &busy,
        409,
        "proxy `web` carries toxic `slow-api` of a chaosbot run",
    );
    assert_eq!(agent.revert("r-2", 1, "f-2").await.status, 200);

    // Destroy: the port is closed and the name is gone.
    assert_eq!(toxi(api, "DELETE", "/proxies/web", None).await.status, 204);
    assert!(round_trip(&listen).await.is_err());
    assert_error(
        &toxi(api, "GET", "/proxies/web", None).await,
        404,
        "proxy not found",
    );

    let log = agent.log_text();
    assert!(
        log.contains("toxic added through the Toxiproxy API"),
        "{log}"
    );
    assert!(log.contains("chaosbot::audit"), "{log}");
}

async fn browser_get(api: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    s.write_all(b"GET /proxies HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0 (X11)\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn toxiproxy_toxics_go_at_the_guard_rail_deadline_and_follow_their_seed() {
    let site = Site::new().await;
    let (_agent, api) = toxi_agent(&site, "toxic_deadline = \"3s\"").await;
    let echo = site.echo.to_string();

    // The same seed on two fresh proxies: the same connections are affected.
    let mut patterns = Vec::new();
    let mut listens = Vec::new();
    for name in ["s1", "s2"] {
        let p = json!({"name": name, "listen": "127.0.0.1:0", "upstream": echo});
        let made = toxi(api, "POST", "/proxies", Some(p)).await;
        let listen = made.body["listen"].as_str().unwrap().to_string();
        let t = json!({"type": "latency", "toxicity": 0.5, "seed": 42,
            "attributes": {"latency": 200}});
        let path = format!("/proxies/{name}/toxics");
        assert_eq!(toxi(api, "POST", &path, Some(t)).await.status, 200);
        let mut hit = Vec::new();
        for _ in 0..8 {
            hit.push(round_trip(&listen).await.unwrap() >= Duration::from_millis(150));
        }
        patterns.push(hit);
        listens.push(listen);
    }
    assert_eq!(patterns[0], patterns[1]);
    assert!(
        patterns[0].contains(&true) && patterns[0].contains(&false),
        "{patterns:?}"
    );

    // Gone by itself at its deadline (3 s after it was made), with a margin.
    let started = Instant::now();
    loop {
        let left = toxi(api, "GET", "/proxies/s2/toxics", None).await.body;
        if left == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still there: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for listen in &listens {
        fast(round_trip(listen).await);
    }
}

#[tokio::test]
async fn toxiproxy_port_in_use_is_a_warning_and_a_remote_listen_needs_allow_remote() {
    let site = Site::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let d = site.path().display();
    let base = format!(
        "name = \"web-1\"\nsocket = \"{d}/agent.sock\"\nsecret = \"{SECRET}\"\nstate_dir = \"{d}/state\"\n"
    );
    let cfg = site.path().join("busy.toml");
    std::fs::write(&cfg, format!("{base}[toxiproxy]\nlisten = \"{addr}\"\n")).unwrap();
    let agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        site.path(),
        Via::Unix(site.socket()),
        Some(SECRET),
    );
    agent.ready().await;
    let log = agent.log_text();
    assert!(log.contains("cannot listen for the Toxiproxy API"), "{log}");
    drop(agent);

    let remote = site.path().join("remote.toml");
    std::fs::write(
        &remote,
        format!("{base}[toxiproxy]\nlisten = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let mut agent = spawn(
        &["agent", "--config", remote.to_str().unwrap()],
        site.path(),
        Via::Unix(site.socket()),
        Some(SECRET),
    );
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(64));
    let log = agent.log_text();
    assert!(log.contains("allow_remote = true"), "{log}");
}

#[tokio::test]
async fn the_local_agent_serves_toxiproxy_with_the_flag_and_stays_while_its_proxies_exist() {
    let site = Site::new().await;
    let api = free_port();
    let sock = site.socket();
    let mut agent = spawn(
        &[
            "agent",
            "--on-demand",
            "--socket",
            sock.to_str().unwrap(),
            "--idle-exit",
            "1s",
            "--toxiproxy",
            &api.to_string(),
        ],
        site.path(),
        Via::Unix(sock.clone()),
        None,
    );
    agent.ready().await;
    // A host name is resolved, IPv4 first as Toxiproxy's resolver does.
    let body = json!({"name": "local", "listen": "localhost:0", "upstream": site.echo.to_string()});
    let made = toxi(api, "POST", "/proxies", Some(body)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let listen = made.body["listen"].as_str().unwrap().to_string();
    assert!(listen.starts_with("127.0.0.1:"), "{listen}");
    fast(round_trip(&listen).await);

    // Idle for twice the idle period, but a proxy made through the API holds it up.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        agent.wait_exit(Duration::ZERO).is_none(),
        "{}",
        agent.log_text()
    );
    fast(round_trip(&listen).await);

    assert_eq!(
        toxi(api, "DELETE", "/proxies/local", None).await.status,
        204
    );
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        agent.log_text()
    );
}

/// `chaosbot agent` with no config: the local agent, kept running, with Toxiproxy's API on
/// its default address (127.0.0.1:8474), so a Toxiproxy client finds it with nothing set up;
/// flags of another mode are refused.
#[tokio::test]
async fn chaosbot_agent_without_a_config_serves_toxiproxy_on_its_default_port() {
    let site = Site::new().await;
    let default: SocketAddr = "127.0.0.1:8474".parse().unwrap();
    // Another test's agent may hold the port a moment (tests of this binary share the host).
    let start = Instant::now();
    while std::net::TcpListener::bind(default).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "127.0.0.1:8474 stayed taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sock = site.socket();
    let agent = spawn(
        &["agent", "--socket", sock.to_str().unwrap()],
        site.path(),
        Via::Unix(sock.clone()),
        None,
    );
    agent.ready().await;
    let log = agent.log_text();
    assert!(
        log.contains("Toxiproxy's API on http://127.0.0.1:8474"),
        "{log}"
    );
    let version = toxi(default, "GET", "/version", None).await;
    assert_eq!(version.status, 200);
    assert!(
        version.body["version"]
            .as_str()
            .is_some_and(|v| v.ends_with("-chaosbot")),
        "{:?}",
        version.body
    );
    let body =
        json!({"name": "standing", "listen": "127.0.0.1:0", "upstream": site.echo.to_string()});
    let made = toxi(default, "POST", "/proxies", Some(body)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let listen = made.body["listen"].as_str().unwrap().to_string();
    fast(round_trip(&listen).await);
    assert_eq!(
        toxi(default, "DELETE", "/proxies/standing", None)
            .await
            .status,
        204
    );
    // Nothing held: it still answers. (Its idle exit is off; an on-demand agent's, 60 s by
    // default, is too long to wait out here, so this does not show the difference.)
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(toxi(default, "GET", "/proxies", None).await.status, 200);
    drop(agent);

    let cfg = site.path().join("agent-any.toml");
    std::fs::write(&cfg, "name = \"x\"\n").unwrap();
    for args in [
        vec![
            "agent",
            "--config",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ],
        vec![
            "agent",
            "--config",
            cfg.to_str().unwrap(),
            "--toxiproxy",
            "off",
        ],
    ] {
        let mut agent = spawn(&args, site.path(), Via::Unix(sock.clone()), None);
        let status = agent.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(64),
            "{args:?}: {}",
            agent.log_text()
        );
    }
}
