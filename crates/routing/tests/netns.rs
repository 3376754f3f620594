//! The component against a real kernel, in a network namespace: what start
//! flushes and keeps, what run installs and withdraws, what release removes.
//! Needs root; skips loudly without it unless TANDEM_REQUIRE_NETNS=1.

use std::time::Duration;

use tandem_config::{RoutedVip, Routing as Config};
use tandem_routing::Routing;
use test_support::netns::{wait_for, Host, Lab};
use tokio_util::sync::CancellationToken;

fn routes(host: &Host) -> String {
    let out = host.sh(&["ip", "route", "show", "table", "all"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS` in `host`, the arguments written as one line.
fn ip(host: &Host, args: &str) {
    let mut argv = vec!["ip"];
    argv.extend(args.split_whitespace());
    let out = host.sh(&argv);
    assert!(out.status.success(), "{argv:?}: {out:?}");
}

#[test]
fn start_flushes_what_is_stale_run_follows_health_and_release_leaves_nothing() {
    let Some(mut lab) = Lab::new("start_flushes_what_is_stale") else {
        return;
    };
    let host = lab.host(&["198.18.0.11/24"]);
    // Left by an earlier run: a route in our table, a VIP no longer
    // configured; and someone else's route in the same table, kept.
    ip(
        &host,
        "route add 198.18.200.1/32 dev lo table 250 proto 250",
    );
    ip(
        &host,
        "route add local 198.18.200.2 dev lo table local proto 250",
    );
    ip(
        &host,
        "route add 198.18.200.3/32 dev lo table 250 proto static",
    );
    let config = Config {
        table: 250,
        protocol: 250,
        device: "tandem-rt-test".to_owned(),
        vip_interface: "lo".to_owned(),
        withdraw_delay: Duration::from_secs(1),
        vips: vec![RoutedVip {
            address: "198.18.100.1".parse().unwrap(),
            services: vec!["api".to_owned()],
        }],
    };
    let inside = host.clone();
    host.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let registry = prometheus::Registry::new();
            let routing = Routing::start(&config, &registry).expect("start");
            let after_start = routes(&inside);
            assert!(!after_start.contains("198.18.200.1"), "{after_start}");
            assert!(!after_start.contains("198.18.200.2"), "{after_start}");
            assert!(
                after_start.contains("198.18.200.3 dev lo table 250 proto static"),
                "{after_start}"
            );
            assert!(
                after_start.contains("local 198.18.100.1 dev lo table local proto 250"),
                "{after_start}"
            );
            assert!(
                !after_start.contains("198.18.100.1 dev tandem-rt-test"),
                "nothing announced before health: {after_start}"
            );

            let handle = routing.handle();
            let stop = CancellationToken::new();
            let task = tokio::spawn(routing.run(stop.clone()));
            handle.set_service_available("api", true);
            let announced = "198.18.100.1 dev tandem-rt-test table 250 proto 250";
            for _ in 0..200 {
                if routes(&inside).contains(announced) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(routes(&inside).contains(announced), "{}", routes(&inside));
            assert!(handle.status()[0].installed);
            let gathered = prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap();
            assert!(
                gathered.contains("tandem_routing_announced{vip=\"198.18.100.1\"} 1"),
                "{gathered}"
            );

            // Removed by hand: put back within the one-second recheck; one
            // of our protocol added by hand: removed.
            ip(&inside, "route del 198.18.100.1/32 table 250");
            ip(
                &inside,
                "route add 198.18.200.9/32 dev lo table 250 proto 250",
            );
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(routes(&inside).contains(announced), "{}", routes(&inside));
            assert!(
                !routes(&inside).contains("198.18.200.9"),
                "{}",
                routes(&inside)
            );

            handle.set_service_available("api", false);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!routes(&inside).contains(announced), "{}", routes(&inside));
            assert_eq!(
                handle.status()[0].verdict.reason(),
                "withdrawn: service `api` has no available backend"
            );

            handle.set_service_available("api", true);
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
            let leftovers = task.await.unwrap();
            assert_eq!(leftovers.withdrawn(), 1);
            assert!(!routes(&inside).contains(announced), "withdrawn at stop");
            assert!(
                routes(&inside).contains("local 198.18.100.1"),
                "still local while draining"
            );
            leftovers.release();
        });
    })
    .join()
    .unwrap();
    let gone = wait_for(Duration::from_secs(2), || {
        let r = routes(&host);
        !r.contains("198.18.100.1") && !r.contains("tandem-rt-test")
    });
    assert!(gone.is_some(), "{}", routes(&host));
    let link = host.sh(&["ip", "link", "show", "tandem-rt-test"]);
    assert!(!link.status.success(), "the device is gone");
    assert!(
        routes(&host).contains("198.18.200.3"),
        "someone else's route stays"
    );
}
