//! Several instances on one PostgreSQL database, as behind a load balancer: each message is
//! stored once whichever instances it reaches, a killed instance loses nothing it
//! acknowledged, and exactly one instance registers with Volt.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use awc::http::Method;
use nix::sys::signal::Signal;
use voltd::store::Store;

use crate::daemon::Daemon;
use crate::fake_volt::FakeVolt;
use crate::helpers::{TestConfig, event_body, http_client, poll_until, send, stored_events};

const TOKEN: &str = "volt-test-token-5e81";
const REGISTERED: &str = "Registered with Volt";
const STOOD_BACK: &str = "another voltd instance sharing this database holds registration";
const CLIENTS: usize = 24;

/// An instance's own directory and port, on `first`'s database (or a new one).
fn instance_config(volt: &FakeVolt, first: Option<&TestConfig>) -> TestConfig {
    let mut config = TestConfig::new()
        .volt(volt)
        .token(TOKEN)
        .log_level("info")
        .extra_toml("admin", "enabled = false");
    if let Some(first) = first {
        config.schema = first.schema.clone();
    }
    config
}

/// Start instances on the store of `first` (or a new one) and wait until each has either
/// registered or stood back.
async fn start_instances(volt: &FakeVolt, count: usize) -> Vec<Daemon> {
    let first = instance_config(volt, None);
    let mut configs = vec![];
    for _ in 1..count {
        configs.push(instance_config(volt, Some(&first)));
    }
    configs.insert(0, first);
    let mut daemons: Vec<Daemon> = configs.into_iter().map(Daemon::spawn).collect();
    for daemon in &mut daemons {
        daemon.wait_until_listening().await;
    }
    for daemon in &daemons {
        poll_until("each instance to register or stand back", || {
            let log = daemon.log();
            std::future::ready((log.contains(REGISTERED) || log.contains(STOOD_BACK)).then_some(()))
        })
        .await;
    }
    daemons
}

#[actix_web::test]
async fn three_instances_store_each_message_once_and_register_once() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).start().await;
    let mut daemons = start_instances(&volt, 3).await;
    let registrants: Vec<usize> = (0..3)
        .filter(|&i| daemons[i].log().contains(REGISTERED))
        .collect();
    assert_eq!(registrants.len(), 1, "exactly one instance registers");
    assert_eq!(volt.calls().len(), 1, "{:?}", volt.calls());

    // Unique events spread over the instances; every fourth message also goes to the next
    // instance at the same moment, as a repeat delivery through the load balancer would.
    let client = http_client(Duration::from_secs(10));
    let urls: Vec<String> = daemons.iter().map(Daemon::webhook_url).collect();
    let acknowledged = Rc::new(RefCell::new(Vec::<(String, String, i64)>::new()));
    let stop = Rc::new(Cell::new(false));
    let next = Rc::new(Cell::new(0_usize));
    let senders: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, urls) = (client.clone(), urls.clone());
            let (acknowledged, stop, next) = (acknowledged.clone(), stop.clone(), next.clone());
            actix_web::rt::spawn(async move {
                while !stop.get() {
                    let n = next.replace(next.get() + 1);
                    let message_id = format!("spread-{n}");
                    let body = event_body("message.received", &message_id, "load");
                    let to = |i: usize| send(&client, Method::POST, &urls[i % 3], body.clone());
                    let replies = if n % 4 == 0 {
                        let (a, b) = tokio::join!(to(n), to(n + 1));
                        vec![a, b]
                    } else {
                        vec![to(n).await]
                    };
                    for reply in replies.into_iter().flatten() {
                        if reply.status == 200 {
                            let (status, id) = reply.outcome();
                            acknowledged
                                .borrow_mut()
                                .push((message_id.clone(), status, id));
                        } else {
                            assert_eq!(reply.status, 503, "{reply:?}");
                        }
                    }
                }
            })
        })
        .collect();
    let count = acknowledged.clone();
    let acked_at_least = |n: usize| {
        let count = count.clone();
        move || std::future::ready((count.borrow().len() >= n).then_some(()))
    };
    poll_until("events acknowledged before the kill", acked_at_least(1000)).await;
    let killed = registrants[0];
    daemons[killed].signal(Signal::SIGKILL);
    assert_eq!(
        daemons[killed].exit_code().await,
        None,
        "killed by the signal"
    );
    let before_kill = acknowledged.borrow().len();
    poll_until(
        "events acknowledged after the kill",
        acked_at_least(before_kill + 1000),
    )
    .await;
    stop.set(true);
    for sender in senders {
        sender.await.unwrap();
    }

    let store = Store::open(&daemons[0].config.database_url())
        .await
        .unwrap();
    let mut stored: HashMap<String, Vec<i64>> = HashMap::new();
    let mut probes = 0;
    for event in stored_events(&store).await {
        match event.fields.message_id {
            Some(message_id) => stored.entry(message_id).or_default().push(event.id),
            None => probes += 1,
        }
    }
    assert_eq!(probes, 1, "Volt's one registration probe");
    store.close().await;
    let acknowledged = acknowledged.take();
    let mut first_stored: HashMap<&str, usize> = HashMap::new();
    for (message_id, status, id) in &acknowledged {
        assert_eq!(stored.get(message_id), Some(&vec![*id]), "{message_id}");
        if status == "stored" {
            *first_stored.entry(message_id).or_default() += 1;
        } else {
            assert_eq!(status, "duplicate");
        }
    }
    assert!(
        first_stored.values().all(|&n| n == 1),
        "a message was answered \"stored\" twice"
    );
    let repeats = acknowledged
        .iter()
        .filter(|(_, s, _)| s == "duplicate")
        .count();
    assert!(repeats > 0, "repeat deliveries reached two instances");
    assert_eq!(volt.calls().len(), 1, "no instance registered again");

    for (i, daemon) in daemons.iter_mut().enumerate().filter(|(i, _)| *i != killed) {
        daemon.signal(Signal::SIGTERM);
        assert_eq!(
            daemon.exit_code().await,
            Some(0),
            "instance {i}: {}",
            daemon.log()
        );
    }
}

#[actix_web::test]
async fn when_the_registrant_dies_the_next_instance_to_start_registers() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).start().await;
    let mut daemons = start_instances(&volt, 2).await;
    let registrant = (0..2)
        .find(|&i| daemons[i].log().contains(REGISTERED))
        .expect("one instance registered");
    assert_eq!(volt.calls().len(), 1);

    daemons[registrant].signal(Signal::SIGKILL);
    assert_eq!(daemons[registrant].exit_code().await, None);
    let mut successor = Daemon::spawn(instance_config(&volt, Some(&daemons[0].config)));
    successor.wait_until_listening().await;
    successor.wait_for_log(REGISTERED).await;
    assert_eq!(volt.calls().len(), 2, "{:?}", volt.calls());

    let survivor = 1 - registrant;
    for daemon in [&mut daemons[survivor], &mut successor] {
        daemon.signal(Signal::SIGTERM);
        assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    }
}
