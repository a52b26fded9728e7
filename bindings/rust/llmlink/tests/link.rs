//! Link, unlink and check between engines of this process over loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use llmlink::{ClusterInfo, DataDist, IpInfo, Options, Role, Status};

#[test]
fn link_then_unlink_between_two_engines() {
    let (p, port) = prompt(1);
    let d = decoder(2);
    assert!(!d.check_link_status(1).unwrap());

    let (st, per) = d.link_clusters(&[cluster(1, port)], LINK_TIMEOUT).unwrap();
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(per, vec![Status::SUCCESS]);
    assert!(d.check_link_status(1).unwrap());
    // Both ends see the link.
    assert!(p.check_link_status(2).unwrap());
    assert_eq!(d.stats().unwrap().outbound_links, 1);
    assert_eq!(p.stats().unwrap().inbound_links, 1);

    // Linking again: a per-cluster outcome, not an error.
    let (st, per) = d.link_clusters(&[cluster(1, port)], LINK_TIMEOUT).unwrap();
    assert_eq!(st, Status::LINK_FAILED);
    assert_eq!(per, vec![Status::ALREADY_LINK]);

    let (st, per) = d
        .unlink_clusters(&[cluster(1, port)], LINK_TIMEOUT, false)
        .unwrap();
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(per, vec![Status::SUCCESS]);
    assert!(!d.check_link_status(1).unwrap());
    // A graceful unlink frees the peer's end too, by the time it returns.
    assert!(!p.check_link_status(2).unwrap());

    // Unlinking what is not linked: per-cluster NOT_YET_LINK.
    let (st, per) = d
        .unlink_clusters(&[cluster(1, port)], LINK_TIMEOUT, false)
        .unwrap();
    assert_eq!(st, Status::UNLINK_FAILED);
    assert_eq!(per, vec![Status::NOT_YET_LINK]);
}

#[test]
fn forced_unlink_frees_the_local_end_and_the_peer_notices() {
    let (p, d) = linked_pair(11, 12);
    let info = cluster(11, 0);
    // force: no message to the peer, so the port is not even needed.
    let (st, per) = d.unlink_clusters(&[info], LINK_TIMEOUT, true).unwrap();
    assert_eq!((st, per), (Status::SUCCESS, vec![Status::SUCCESS]));
    assert!(!d.check_link_status(11).unwrap());
    // The peer sees the closed connection; bounded wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.check_link_status(12).unwrap() {
        assert!(
            Instant::now() < deadline,
            "prompt still sees the link after a forced unlink"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_prompt_side_unlinks_a_decoder_by_its_cluster_id() {
    let (p, d) = linked_pair(21, 22);
    let decoder_side = ClusterInfo {
        remote_cluster_id: 22,
        ..ClusterInfo::default()
    };
    let (st, per) = p
        .unlink_clusters(&[decoder_side], LINK_TIMEOUT, false)
        .unwrap();
    assert_eq!((st, per), (Status::SUCCESS, vec![Status::SUCCESS]));
    assert!(!p.check_link_status(22).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.check_link_status(21).unwrap() {
        assert!(Instant::now() < deadline, "decoder still sees the link");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn per_cluster_statuses_with_one_unreachable_cluster() {
    let (_p1, port1) = prompt(31);
    let (_p3, port3) = prompt(33);
    let (_dead_fd, dead) = dead_port();
    let d = decoder(32);
    let clusters = [cluster(31, port1), cluster(77, dead), cluster(33, port3)];
    let (st, per) = d.link_clusters(&clusters, LINK_TIMEOUT).unwrap();
    // Read at once: the message of the partial failure names the cluster.
    let message = llmlink::last_error();
    assert_eq!(st, Status::LINK_FAILED);
    assert_eq!(
        per,
        vec![Status::SUCCESS, Status::LINK_FAILED, Status::SUCCESS]
    );
    assert!(
        message.contains("77"),
        "last_error does not name cluster 77: {message}"
    );
    // The ones that linked stay linked.
    assert!(d.check_link_status(31).unwrap());
    assert!(d.check_link_status(33).unwrap());
    assert!(!d.check_link_status(77).unwrap());
    assert_eq!(d.stats().unwrap().outbound_links, 2);
}

#[test]
fn the_wrong_cluster_id_or_role_is_a_per_cluster_status() {
    let (_p, port) = prompt(41);
    let d = decoder(42);
    // Someone else listens there: CLUSTER_ID_MISMATCH for that cluster.
    let (st, per) = d
        .link_clusters(&[cluster(999, port)], LINK_TIMEOUT)
        .unwrap();
    assert_eq!(st, Status::LINK_FAILED);
    assert_eq!(per, vec![Status::CLUSTER_ID_MISMATCH]);
    // Asking for a MIX engine where a PROMPT listens fails that cluster only.
    let (st, per) = d
        .link_clusters(
            &[cluster(41, port).with_remote_role(Role::Mix)],
            LINK_TIMEOUT,
        )
        .unwrap();
    assert_eq!(st, Status::LINK_FAILED);
    assert_ne!(per[0], Status::SUCCESS);
    assert!(!d.check_link_status(41).unwrap());
    // The right role links.
    let (st, _) = d
        .link_clusters(
            &[cluster(41, port).with_remote_role(Role::Prompt)],
            LINK_TIMEOUT,
        )
        .unwrap();
    assert_eq!(st, Status::SUCCESS);
}

#[test]
fn a_local_interface_can_be_named() {
    let (_p, port) = prompt(51);
    let d = decoder(52);
    let info = cluster(51, port).with_local_ip(IpInfo::new("127.0.0.1", 0));
    let (st, per) = d.link_clusters(&[info], LINK_TIMEOUT).unwrap();
    assert_eq!((st, per), (Status::SUCCESS, vec![Status::SUCCESS]));
}

#[test]
fn role_cluster_id_and_finalize() {
    let (mut p, _port) = prompt(61);
    assert_eq!(p.role().unwrap(), Role::Prompt);
    assert_eq!(p.cluster_id().unwrap(), 61);
    p.finalize();
    // Still answers after finalize; a running-engine call does not.
    assert_eq!(p.cluster_id().unwrap(), 61);
    let e = p.listen_port(0).unwrap_err();
    assert_eq!(e.status(), Status::ENGINE_FINALIZED);
    p.finalize(); // idempotent
    let mix = DataDist::new(Role::Mix, 62).unwrap();
    assert_eq!(mix.role().unwrap(), Role::Mix);
    mix.init(&Options::new().set("llm.listenIpInfo", "127.0.0.1:0"))
        .unwrap();
    assert_ne!(mix.listen_port(0).unwrap(), 0);
}

#[test]
fn finalize_closes_links_and_the_peer_notices() {
    let (mut p, d) = linked_pair(71, 72);
    p.finalize();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.check_link_status(71).unwrap() {
        assert!(
            Instant::now() < deadline,
            "decoder still linked to a finalized prompt"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
