//! The plugin runtime with real components built by the workspace: every
//! role through its pool, configure errors, deadlines, the memory cap,
//! refused components and concurrent calls; and the host's shared store
//! used by a plugin, through the proxy.

use crate::support::config::ConfigBuilder;
use crate::support::{request, start_proxy, temp_dir, test_plugins};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasp::plugins::{
    Action, BalancerPool, CallError, Decision, Direction, FilterPool, Limits, LoadError, Message,
    Opened, OriginPool, Peer, RequestHead, RouterPool, Runtime,
};

fn runtime() -> Arc<Runtime> {
    let limits = Limits {
        instances: 64,
        ..Limits::default()
    };
    Runtime::new(limits, None, None).expect("engine")
}

fn head(path: &str, headers: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        headers: headers.into(),
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        listener: "127.0.0.1:8000".into(),
        tls: false,
        sni: None,
    }
}

fn probe_router(rt: &Arc<Runtime>) -> RouterPool {
    let plugin = rt
        .load("probe", test_plugins::get("probe"))
        .expect("probe loads");
    RouterPool::new(plugin, r#"{"tag":"v1"}"#.into()).expect("probe configures")
}

fn body(decision: Decision) -> String {
    match decision {
        Decision::Respond(response) => response.body,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn every_role_is_callable_through_its_pool() {
    let rt = runtime();
    let plugin = rt.load("probe", test_plugins::get("probe")).unwrap();
    assert_eq!(plugin.roles().len(), 4);
    assert_eq!(plugin.sha256().len(), 64);

    let router = RouterPool::new(plugin.clone(), r#"{"tag":"v1"}"#.into()).unwrap();
    match router.route(&head("/hello", "x-probe: yes")).unwrap() {
        Decision::Respond(response) => {
            assert_eq!(response.status, 200);
            assert_eq!(response.body, "GET /hello yes");
            assert_eq!(
                response.headers,
                vec![("x-tag".to_string(), "v1".to_string())]
            );
        }
        other => panic!("unexpected decision {other:?}"),
    }

    let balancer = BalancerPool::new(plugin.clone(), "{}".into()).unwrap();
    let peer = |usable| Peer {
        address: "127.0.0.1:1".into(),
        weight: 1,
        active: 0,
        usable,
        backup: false,
    };
    let peers = [peer(true), peer(false), peer(true)];
    assert_eq!(
        balancer.pick(&head("/", ""), "up", &peers, 0, "").unwrap(),
        Some(0)
    );
    assert_eq!(
        balancer.pick(&head("/", ""), "up", &peers, 1, "").unwrap(),
        Some(2)
    );
    assert_eq!(
        balancer.pick(&head("/", ""), "up", &[], 1, "").unwrap(),
        None
    );

    let origin = OriginPool::new(plugin.clone(), String::new()).unwrap();
    assert_eq!(
        origin
            .check(&head("/", "origin: https://ok.example"), 3)
            .unwrap(),
        Ok(())
    );
    let refused = origin
        .check(&head("/", "origin: https://evil.example"), 3)
        .unwrap();
    assert_eq!(
        refused,
        Err(r#"origin Some("https://evil.example") refused at location 3"#.into())
    );

    let filters = FilterPool::new(plugin, r#"{"tag":"f"}"#.into()).unwrap();
    let ws = head("/ws", "");
    let mut opened = Opened::default();
    filters.open(&mut opened, 7, &ws).unwrap();
    let text = |s: &str| Message::Text(s.into());
    let mut send = |dir, message: &Message| {
        filters
            .on_message(&mut opened, 7, &ws, dir, message)
            .unwrap()
    };
    assert_eq!(
        send(Direction::ClientToUpstream, &text("hi")),
        Action::Replace(text("f>hi"))
    );
    assert_eq!(
        send(Direction::UpstreamToClient, &text("yo")),
        Action::Replace(text("f<yo"))
    );
    assert_eq!(
        send(Direction::ClientToUpstream, &text("count")),
        Action::Replace(text("f#3"))
    );
    assert_eq!(
        send(Direction::ClientToUpstream, &text("drop")),
        Action::Drop
    );
    let binary = Message::Binary(vec![0, 1, 2]);
    assert_eq!(send(Direction::ClientToUpstream, &binary), Action::Forward);
    filters.close(&mut opened, 7);
}

/// `count` answers how many messages the probe saw on this connection since
/// its `on-open` on the instance that answers.
fn count(filters: &FilterPool, opened: &mut Opened, conn: u64) -> Result<Action, CallError> {
    let message = Message::Text("count".into());
    filters.on_message(
        opened,
        conn,
        &head("/ws", ""),
        Direction::ClientToUpstream,
        &message,
    )
}

#[test]
fn connections_share_an_instance_and_keep_their_own_state() {
    let rt = runtime();
    let plugin = rt.load("probe", test_plugins::get("probe")).unwrap();
    let filters = FilterPool::new(plugin, r#"{"tag":"f"}"#.into()).unwrap();
    let (mut a, mut b) = (Opened::default(), Opened::default());
    filters.open(&mut a, 1, &head("/ws", "")).unwrap();
    filters.open(&mut b, 2, &head("/ws", "")).unwrap();
    let reply = |n: u32| Action::Replace(Message::Text(format!("f#{n}")));
    assert_eq!(count(&filters, &mut a, 1), Ok(reply(1)));
    assert_eq!(count(&filters, &mut a, 1), Ok(reply(2)));
    assert_eq!(count(&filters, &mut b, 2), Ok(reply(1)));
    // A connection that ended and came back (same id) starts over.
    filters.close(&mut a, 1);
    filters.open(&mut a, 1, &head("/ws", "")).unwrap();
    assert_eq!(count(&filters, &mut a, 1), Ok(reply(1)));
    assert_eq!(count(&filters, &mut b, 2), Ok(reply(2)));
}

#[test]
fn a_failed_call_costs_only_its_connection_and_the_others_are_reopened() {
    let rt = runtime();
    let plugin = rt.load("probe", test_plugins::get("probe")).unwrap();
    let filters = FilterPool::new(plugin, r#"{"tag":"f"}"#.into()).unwrap();
    let ws = head("/ws", "");
    let (mut victim, mut bystander) = (Opened::default(), Opened::default());
    filters.open(&mut victim, 1, &ws).unwrap();
    filters.open(&mut bystander, 2, &ws).unwrap();
    let reply = |n: u32| Action::Replace(Message::Text(format!("f#{n}")));
    assert_eq!(count(&filters, &mut bystander, 2), Ok(reply(1)));
    assert_eq!(count(&filters, &mut bystander, 2), Ok(reply(2)));

    let poison = Message::Text("trap".into());
    let failed = filters.on_message(&mut victim, 1, &ws, Direction::ClientToUpstream, &poison);
    assert!(matches!(failed, Err(CallError::Trap(_))), "{failed:?}");
    // The bystander goes on, opened on the fresh instance before its
    // message: its state restarted there.
    assert_eq!(count(&filters, &mut bystander, 2), Ok(reply(1)));
    // So does the victim's id, should its connection carry on (fail-open).
    assert_eq!(count(&filters, &mut victim, 1), Ok(reply(1)));
}

#[test]
fn configure_errors_carry_the_plugins_message() {
    let rt = runtime();
    let plugin = rt.load("probe", test_plugins::get("probe")).unwrap();
    match RouterPool::new(
        plugin.clone(),
        r#"{"fail":"upstream table is empty"}"#.into(),
    ) {
        Err(LoadError::Configure(message)) => assert_eq!(message, "upstream table is empty"),
        other => panic!("expected a configure error, got {:?}", other.err()),
    }
    match FilterPool::new(plugin, r#"{"tag": 5}"#.into()) {
        Err(LoadError::Configure(message)) => assert!(
            message.starts_with("invalid configuration: invalid type"),
            "{message}"
        ),
        other => panic!("expected a configure error, got {:?}", other.err()),
    }
}

#[test]
fn an_infinite_loop_is_stopped_and_the_next_call_succeeds() {
    let rt = runtime();
    let router = probe_router(&rt);
    let started = Instant::now();
    assert_eq!(
        router.route(&head("/loop", "")).unwrap_err(),
        CallError::Timeout
    );
    // Not a speed check: a generous bound proving the loop was cut at all.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        body(router.route(&head("/after", "")).unwrap()),
        "GET /after "
    );

    let filters = FilterPool::new(router.plugin().clone(), "{}".into()).unwrap();
    let spin = Message::Text("loop".into());
    let ws = head("/ws", "");
    assert_eq!(
        filters
            .on_message(
                &mut Opened::default(),
                1,
                &ws,
                Direction::ClientToUpstream,
                &spin
            )
            .unwrap_err(),
        CallError::Timeout
    );
}

#[test]
fn a_loop_after_a_quiet_spell_is_still_stopped() {
    // With no call for a while the epoch ticker sleeps; the next call must
    // wake it, or a looping plugin would never be interrupted.
    let rt = runtime();
    let router = probe_router(&rt);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        router.route(&head("/loop", "")).unwrap_err(),
        CallError::Timeout
    );
}

#[test]
fn a_loop_whose_budget_outlasts_the_tickers_idle_spell_is_still_stopped() {
    // The ticker sleeps after 100 quiet ticks; a call still running then
    // (here with a 300 ms budget) must keep it awake, or it never ends.
    let limits = Limits {
        call_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let rt = Runtime::new(limits, None, None).expect("engine");
    let router = probe_router(&rt);
    assert_eq!(
        router.route(&head("/loop", "")).unwrap_err(),
        CallError::Timeout
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn allocating_past_the_cap_fails_with_a_memory_error_and_rss_stays_bounded() {
    let rt = runtime();
    let router = probe_router(&rt);
    router.route(&head("/warm", "")).unwrap();
    let before = rss_bytes();
    for _ in 0..8 {
        assert_eq!(
            router.route(&head("/oom", "")).unwrap_err(),
            CallError::OutOfMemory
        );
    }
    let grown = rss_bytes().saturating_sub(before);
    // Eight instances each filled 64 MiB; their memory must have been given back.
    assert!(grown < 160 << 20, "RSS grew by {} MiB", grown >> 20);
    assert_eq!(
        body(router.route(&head("/fine", "")).unwrap()),
        "GET /fine "
    );
}

#[test]
fn a_trap_is_reported_and_isolated() {
    let rt = runtime();
    let router = probe_router(&rt);
    match router.route(&head("/trap", "")) {
        Err(CallError::Trap(message)) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(body(router.route(&head("/ok", "")).unwrap()), "GET /ok ");
}

#[tokio::test]
async fn a_trap_on_a_tokio_worker_is_a_failed_call() {
    // A panicking guest writes to stderr, whose sync host side panics inside
    // a tokio runtime: the call fails, the caller's task survives.
    let rt = runtime();
    let router = probe_router(&rt);
    assert!(matches!(
        router.route(&head("/trap", "")),
        Err(CallError::Trap(_))
    ));
    assert_eq!(body(router.route(&head("/ok", "")).unwrap()), "GET /ok ");
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let rt = runtime();
    assert!(matches!(
        rt.load("junk", b"definitely not wasm"),
        Err(LoadError::NotAComponent(_))
    ));
    // A core module (the empty module) is wasm but not a component.
    let core_module = b"\0asm\x01\0\0\0";
    assert!(matches!(
        rt.load("core", core_module),
        Err(LoadError::NotAComponent(_))
    ));
    let truncated = &test_plugins::get("probe")[..1000];
    assert!(matches!(
        rt.load("partial", truncated),
        Err(LoadError::NotAComponent(_))
    ));
}

#[test]
fn a_component_exporting_no_role_is_refused() {
    let rt = runtime();
    let error = rt
        .load("no-role", test_plugins::get("no-role"))
        .unwrap_err();
    assert!(matches!(error, LoadError::NoRole), "{error}");
    assert!(error.to_string().contains("exports no wasp role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_calling_one_plugin_concurrently_get_their_own_answers() {
    let rt = runtime();
    let router = Arc::new(probe_router(&rt));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let router = router.clone();
            tokio::spawn(async move {
                for call in 0..200 {
                    let path = format!("/t{task}/{call}");
                    let answer = body(
                        router
                            .route(&head(&path, &format!("x-probe: {task}-{call}")))
                            .unwrap(),
                    );
                    assert_eq!(answer, format!("GET {path} {task}-{call}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A probe router answer on the host store: status, value and the number
/// of the instance that answered (`VALUE instance N`).
async fn ask_store(addr: std::net::SocketAddr, path: &str) -> (u16, String, u32) {
    let (status, body) = request(addr, "GET", path).await;
    let (value, instance) = body
        .rsplit_once(" instance ")
        .unwrap_or_else(|| panic!("GET {path}: {status} {body:?}"));
    (status, value.to_owned(), instance.parse().unwrap())
}

#[tokio::test]
async fn the_host_store_keeps_values_across_requests_and_instances() {
    let probe = temp_dir("host-store").join("probe.wasm");
    std::fs::write(&probe, test_plugins::get("probe")).unwrap();
    let config = ConfigBuilder::new()
        .plugin("router", &probe)
        .location("/", |l| l.returns(200, "unused"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;

    let (status, _, setter) = ask_store(addr, "/kv/set/greeting/hello").await;
    assert_eq!(status, 200);
    assert_eq!(ask_store(addr, "/kv/get/greeting").await.1, "hello");
    assert_eq!(ask_store(addr, "/kv/get/unset").await.0, 404);
    for expected in 1..=3 {
        assert_eq!(
            ask_store(addr, "/counter/hits").await.1,
            expected.to_string()
        );
    }

    // A trap discards the instance that ran it; an instance made since (it
    // has a new number) finds the value and the count the old one left.
    let mut fresh = None;
    for _ in 0..10 {
        assert_eq!(request(addr, "GET", "/trap").await.0, 500);
        let (status, value, instance) = ask_store(addr, "/kv/get/greeting").await;
        if instance != setter {
            fresh = Some((status, value));
            break;
        }
    }
    assert_eq!(
        fresh,
        Some((200, "hello".to_owned())),
        "no new instance served"
    );
    assert_eq!(ask_store(addr, "/counter/hits").await.1, "4");
    std::fs::remove_dir_all(probe.parent().unwrap()).unwrap();
}

#[test]
fn a_plugin_built_against_another_contract_version_is_refused_naming_both() {
    let rt = runtime();
    let error = rt
        .load("old-contract", test_plugins::get("old-contract"))
        .unwrap_err();
    assert!(matches!(error, LoadError::WitVersion { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("wasp:plugin@0.1.0"), "{message}");
    assert!(
        message.contains(&format!("wasp:plugin@{}", wasp::plugins::WIT_VERSION)),
        "{message}"
    );
    assert_ne!(wasp::plugins::WIT_VERSION, "0.1.0");
}

/// What a probe router instance answers on the host store for `path`:
/// status and value (`VALUE instance N` with the instance cut off).
fn store(router: &RouterPool, path: &str) -> (u16, String) {
    match router.route(&head(path, "")).unwrap() {
        Decision::Respond(response) => {
            let value = response.body.rsplit_once(" instance ").unwrap().0;
            (response.status, value.to_owned())
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn each_plugin_has_a_kv_namespace_of_its_own_and_shares_one() {
    let rt = runtime();
    let bytes = test_plugins::get("probe");
    // The same component under two names is two plugins.
    let a = RouterPool::new(rt.load("a.wasm", bytes).unwrap(), "{}".into()).unwrap();
    let b = RouterPool::new(rt.load("b.wasm", bytes).unwrap(), "{}".into()).unwrap();
    assert_eq!(store(&a, "/kv/set/k/a-value"), (200, "a-value".into()));
    assert_eq!(store(&b, "/kv/get/k").0, 404);
    assert_eq!(store(&b, "/kv/set/k/b-value").0, 200);
    assert_eq!(store(&a, "/kv/get/k"), (200, "a-value".into()));
    assert_eq!(store(&a, "/shared/kv/set/k/everyone").0, 200);
    assert_eq!(store(&b, "/shared/kv/get/k"), (200, "everyone".into()));
    // Counters too.
    assert_eq!(store(&a, "/counter/n"), (200, "1".into()));
    assert_eq!(store(&b, "/counter/n"), (200, "1".into()));
    // A plugin loaded again under its name (a reload) finds its keys.
    let a2 = RouterPool::new(rt.load("a.wasm", bytes).unwrap(), "{}".into()).unwrap();
    assert_eq!(store(&a2, "/kv/get/k"), (200, "a-value".into()));
}

#[test]
fn kv_delete_and_compare_and_set_work_and_limits_refuse_with_the_reason() {
    let rt = runtime();
    let router = RouterPool::new(
        rt.load("probe", test_plugins::get("probe")).unwrap(),
        "{}".into(),
    )
    .unwrap();
    // A lease: taken when free, refused while held, given back by its holder.
    assert_eq!(
        store(&router, "/kv/cas/lease/-/ann"),
        (200, "swapped".into())
    );
    assert_eq!(store(&router, "/kv/cas/lease/-/bob"), (409, "ann".into()));
    assert_eq!(store(&router, "/kv/cas/lease/bob/-"), (409, "ann".into()));
    assert_eq!(
        store(&router, "/kv/cas/lease/ann/-"),
        (200, "swapped".into())
    );
    assert_eq!(store(&router, "/kv/get/lease").0, 404);
    assert_eq!(store(&router, "/kv/set/gone/v").0, 200);
    assert_eq!(store(&router, "/kv/delete/gone"), (200, "deleted".into()));
    assert_eq!(store(&router, "/kv/delete/gone").0, 404);
    let long_key = "k".repeat(300);
    assert_eq!(
        store(&router, &format!("/kv/set/{long_key}/v")),
        (507, "key of 300 bytes (at most 256)".into())
    );
}
