//! Applications as units, over the real protocol on loopback: started and stopped at run time
//! through the built-in `switchboard.node` service, a stop that drains and costs callers nothing
//! while another provider exists, the refusal to stop the last provider, and a crashing task
//! contained to its own application and restarted within its restart intensity.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use support::*;
use switchboard::application::{RestartIntensity, SharedApplication, StartFuture};
use switchboard::{
    AppContext, Application, Applications, Bytes, CallOptions, Node, NodeError, Request,
    eventually, system,
};
use switchboard_proto::v1 as wire;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(10);

/// An application hosting `service`, whose method `sleep` holds a call for 200 ms, and whose
/// background task panics each time `crash` is bumped.
struct TestApp {
    name: &'static str,
    service: &'static str,
    crash: watch::Receiver<u32>,
}

impl Application for TestApp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            let node = context.node().name().to_owned();
            context.register_service(self.service, move |request: Request| {
                let node = node.clone();
                async move {
                    if request.method == "sleep" {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Bytes::from(node))
                }
            });
            let mut crash = self.crash.clone();
            crash.borrow_and_update();
            let shutdown = context.shutdown_token();
            context.spawn(async move {
                tokio::select! {
                    changed = crash.changed() => {
                        if changed.is_ok() {
                            panic!("injected crash");
                        }
                    }
                    () = shutdown.cancelled() => {}
                }
            });
            Ok(())
        })
    }
}

/// A node hosting the applications `echo` (service `echo`) and `steady` (service `steady`), and
/// the sender that crashes `echo`'s task.
async fn app_node(
    name: &str,
    seeds: &[&str],
    start: &[&str],
    intensity: RestartIntensity,
) -> (Node, Arc<Applications>, watch::Sender<u32>) {
    let (crash, crashes) = watch::channel(0);
    let (_, quiet) = watch::channel(0);
    let catalog: Vec<SharedApplication> = vec![
        Arc::new(TestApp {
            name: "echo",
            service: "echo",
            crash: crashes,
        }),
        Arc::new(TestApp {
            name: "steady",
            service: "steady",
            crash: quiet,
        }),
    ];
    let node = bare_node(name, seeds).await;
    let applications = Applications::install(&node, catalog, intensity).unwrap();
    for app in start {
        applications.start(app).await.unwrap();
    }
    (node, applications, crash)
}

fn relaxed() -> RestartIntensity {
    RestartIntensity {
        max_restarts: 3,
        window: Duration::from_secs(60),
    }
}

/// Calls `method` of `on`'s built-in service with an [`wire::AppControl`].
async fn control(
    from: &Node,
    on: &Node,
    method: &str,
    app: &str,
    force: bool,
) -> Result<Vec<wire::AppInfo>, NodeError> {
    let request = wire::AppControl {
        app: app.into(),
        force,
    };
    let reply = from
        .call_on(
            on.name(),
            system::SERVICE,
            method.to_owned(),
            request.encode_to_vec(),
            CallOptions::default().timeout(Duration::from_secs(30)),
        )
        .await?;
    Ok(wire::AppsReply::decode(reply).unwrap().apps)
}

fn state_of(apps: &[wire::AppInfo], app: &str) -> String {
    apps.iter()
        .find(|a| a.name == app)
        .map(|a| a.state.clone())
        .unwrap_or_default()
}

fn provides(viewer: &Node, provider: &str, service: &str) -> bool {
    viewer.nodes().iter().any(|n| {
        n.name == provider
            && n.state == switchboard::PeerState::Up
            && n.services.iter().any(|s| s == service)
    })
}

#[tokio::test]
async fn applications_start_and_stop_at_run_time_through_the_protocol() {
    let (a, _, _crash) = app_node("apps-a@test", &[], &["steady"], relaxed()).await;
    let b = bare_node("apps-b@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&b, &["apps-a@test"]) }).await);
    assert!(!provides(&b, "apps-a@test", "echo"));

    let apps = control(&b, &a, "app_start", "echo", false).await.unwrap();
    assert_eq!(state_of(&apps, "echo"), "running");
    assert!(apps.iter().find(|x| x.name == "echo").unwrap().since_ms > 0);
    assert!(eventually(DEADLINE, || async { provides(&b, "apps-a@test", "echo") }).await);
    let reply = b
        .call("echo", "hello", Vec::new(), CallOptions::idempotent())
        .await
        .unwrap();
    assert_eq!(&reply[..], b"apps-a@test");

    // a is the only provider of echo: a plain stop is refused and names what would be lost.
    let refused = control(&b, &a, "app_stop", "echo", false)
        .await
        .unwrap_err();
    let NodeError::Service(error) = refused else {
        panic!("expected a service error, got {refused:?}");
    };
    assert_eq!(error.code, "last_provider");
    assert!(error.message.contains("--force"), "{}", error.message);
    assert!(
        provides(&b, "apps-a@test", "echo"),
        "a refused stop changes nothing"
    );

    let apps = control(&b, &a, "app_stop", "echo", true).await.unwrap();
    assert_eq!(state_of(&apps, "echo"), "stopped");
    assert_eq!(state_of(&apps, "steady"), "running");
    assert!(eventually(DEADLINE, || async { !provides(&b, "apps-a@test", "echo") }).await);

    let unknown = control(&b, &a, "app_start", "nope", false)
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, NodeError::Service(e) if e.code == "unknown_app"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn stopping_and_starting_a_provider_under_load_fails_no_idempotent_call() {
    let (a, _, _c1) = app_node("load-a@test", &[], &["echo"], relaxed()).await;
    let (b, _, _c2) = app_node("load-b@test", &[a.address()], &["echo"], relaxed()).await;
    let caller = bare_node("load-caller@test", &[a.address()]).await;
    assert!(
        eventually(DEADLINE, || async {
            provides(&caller, "load-a@test", "echo") && provides(&caller, "load-b@test", "echo")
        })
        .await
    );

    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (caller, failures, calls, stop) = (
            caller.clone(),
            failures.clone(),
            calls.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                // Half of them are held in flight for 200 ms, so a stop meets calls to drain.
                let method = if calls.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    "sleep"
                } else {
                    "quick"
                };
                if let Err(error) = caller
                    .call("echo", method, Vec::new(), CallOptions::idempotent())
                    .await
                {
                    eprintln!("failed call: {error}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for _ in 0..3 {
        let apps = control(&caller, &a, "app_stop", "echo", false)
            .await
            .unwrap();
        assert_eq!(state_of(&apps, "echo"), "stopped");
        assert!(
            eventually(DEADLINE, || async {
                !provides(&caller, "load-a@test", "echo")
            })
            .await
        );
        let before = calls.load(Ordering::Relaxed);
        assert!(
            eventually(DEADLINE, || async {
                calls.load(Ordering::Relaxed) > before + 20
            })
            .await
        );
        control(&caller, &a, "app_start", "echo", false)
            .await
            .unwrap();
        assert!(
            eventually(DEADLINE, || async {
                provides(&caller, "load-a@test", "echo")
            })
            .await
        );
    }
    stop.cancel();
    for client in clients {
        client.await.unwrap();
    }
    let total = calls.load(Ordering::Relaxed);
    assert!(total > 100, "only {total} calls were made");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "of {total} calls");
    drop(b);
}

#[tokio::test]
async fn a_crashing_task_restarts_its_application_alone_until_the_intensity_is_spent() {
    let intensity = RestartIntensity {
        max_restarts: 2,
        window: Duration::from_secs(60),
    };
    let (a, applications, crash) =
        app_node("crash-a@test", &[], &["echo", "steady"], intensity).await;
    let b = bare_node("crash-b@test", &[a.address()]).await;
    assert!(
        eventually(DEADLINE, || async {
            provides(&b, "crash-a@test", "echo") && provides(&b, "crash-a@test", "steady")
        })
        .await
    );
    let info = |app: &str| {
        applications
            .list()
            .into_iter()
            .find(|x| x.name == app)
            .unwrap()
    };

    for restarts in 1..=2u32 {
        crash.send_modify(|n| *n += 1);
        assert!(
            eventually(DEADLINE, || async {
                let echo = info("echo");
                echo.restarts == restarts && echo.state == "running"
            })
            .await,
            "echo was not restarted: {:?}",
            info("echo")
        );
        assert!(info("echo").last_failure.contains("injected crash"));
        // The other application, and the node, never noticed.
        assert_eq!(info("steady").state, "running");
        assert_eq!(info("steady").restarts, 0);
        b.call_on(
            "crash-a@test",
            "steady",
            "hi",
            Vec::new(),
            CallOptions::default(),
        )
        .await
        .unwrap();
    }
    assert!(eventually(DEADLINE, || async { provides(&b, "crash-a@test", "echo") }).await);
    b.call_on(
        "crash-a@test",
        "echo",
        "hi",
        Vec::new(),
        CallOptions::default(),
    )
    .await
    .unwrap();

    // A third crash within the window: echo stays stopped, steady runs on.
    crash.send_modify(|n| *n += 1);
    assert!(
        eventually(DEADLINE, || async { info("echo").state == "failed" }).await,
        "{:?}",
        info("echo")
    );
    assert!(eventually(DEADLINE, || async { !provides(&b, "crash-a@test", "echo") }).await);
    assert_eq!(info("steady").state, "running");
    b.call_on(
        "crash-a@test",
        "steady",
        "hi",
        Vec::new(),
        CallOptions::default(),
    )
    .await
    .unwrap();
    b.call_on(
        "crash-a@test",
        system::SERVICE,
        "ping",
        Vec::new(),
        CallOptions::default(),
    )
    .await
    .unwrap();

    // An operator's start clears the record and runs it again.
    control(&b, &a, "app_start", "echo", false).await.unwrap();
    assert_eq!(info("echo").state, "running");
    assert_eq!(info("echo").restarts, 0);
}
