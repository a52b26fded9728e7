//! `DataDist::link_stats`: the counters of one link, as each end sees it
//! (what the peer's requests did to this engine's memory), between two
//! engines of this process linked on loopback, over tcp and over shm.

mod common;

use common::*;
use llmlink::{
    CacheDesc, CacheKey, DataDist, DataType, LinkStats, Options, RdmaProtection, Role, Status,
};

/// 4 tensors (2 layers x K/V), 8 blocks of 4 x 16 fp16 (128 bytes).
fn blocks_desc() -> CacheDesc {
    CacheDesc::new(4, DataType::Float16, vec![8, 4, 16])
}

const BLOCK: u64 = 4 * 16 * 2;
const TENSORS: u64 = 4;

/// (prompt, decoder) linked with `llmlink.Transport` = `transport` on both.
fn pair(prompt_id: u64, decoder_id: u64, transport: &str) -> (DataDist, DataDist) {
    let (p, port) = prompt_with(
        prompt_id,
        Options::new().set("llmlink.Transport", transport),
    );
    let d = DataDist::new(Role::Decoder, decoder_id).expect("create decoder");
    d.init(&Options::new().set("llmlink.Transport", transport))
        .expect("init decoder");
    let (st, per) = d
        .link_clusters(&[cluster(prompt_id, port)], LINK_TIMEOUT)
        .expect("link");
    assert!(st.is_success(), "link: {st} {per:?}");
    (p, d)
}

/// A new link: nothing counted, and (no RDMA on loopback tcp or shm) no
/// rail: the rail fields 0, the per-rail vectors empty.
const ZERO: LinkStats = LinkStats {
    rdma_protection: RdmaProtection::None,
    peer_write_bytes: 0,
    peer_read_bytes: 0,
    requests_fenced: 0,
    rdma_rails: 0,
    rdma_rails_up: 0,
    rdma_rail_failovers: 0,
    rdma_rail_repairs: 0,
    rdma_rail_bytes: Vec::new(),
    rdma_rail_mtu: Vec::new(),
};

#[test]
fn a_new_link_counts_nothing_and_an_unknown_cluster_is_not_yet_link() {
    let (mut p, d) = pair(401, 402, "auto");
    // Both ends of the link answer, each by the other's cluster id.
    assert_eq!(p.link_stats(402).unwrap(), ZERO);
    let s = d.link_stats(401).unwrap();
    assert_eq!(s, ZERO);
    assert!(
        s.rdma_rail_bytes.is_empty() && s.rdma_rail_mtu.is_empty(),
        "{s:?}"
    );
    assert_eq!(llmlink::MAX_RDMA_RAILS, 4);
    assert_eq!(llmlink::llmlink_sys::LLMLINK_LINK_STATS_VERSION, 2);
    // No link with cluster 77: NOT_YET_LINK, and the message names it.
    let e = p.link_stats(77).unwrap_err();
    assert_eq!(e.status(), Status::NOT_YET_LINK, "{e}");
    assert!(e.message().contains("77"), "{e}");
    let e = d.link_stats(402).unwrap_err(); // its own id is no link
    assert_eq!(e.status(), Status::NOT_YET_LINK, "{e}");
    // An unlinked cluster has no counters any more.
    let port = p.listen_port(0).unwrap();
    let (st, per) = d
        .unlink_clusters(&[cluster(401, port)], LINK_TIMEOUT, true)
        .unwrap();
    assert!(st.is_success(), "unlink: {st} {per:?}");
    assert_eq!(
        d.link_stats(401).unwrap_err().status(),
        Status::NOT_YET_LINK
    );
    // A finalized engine says so.
    p.finalize();
    assert_eq!(
        p.link_stats(402).unwrap_err().status(),
        Status::ENGINE_FINALIZED
    );
}

/// A pull reads the prompt engine's memory, a push writes it: the prompt
/// engine's link counts exactly the bytes moved, the decoder's link (whose
/// memory the peer never touched) stays at zero.
fn counts_the_bytes_the_peer_moved(prompt_id: u64, decoder_id: u64, transport: &str) {
    let (p, d) = pair(prompt_id, decoder_id, transport);
    let key = CacheKey::Blocks {
        prompt_cluster_id: prompt_id,
        model_id: 0,
    };
    let mut held = p
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), Some(&key))
        .unwrap();
    for t in 0..held.num_tensors() {
        fill(held.tensor_mut(t), 4, t);
    }
    let mut local = d
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), None)
        .unwrap();

    d.cache_manager()
        .pull_blocks(&key, &mut local, &[3, 4, 7], &[0, 1, 2], None)
        .unwrap();
    let read = 3 * BLOCK * TENSORS;
    assert_eq!(
        p.link_stats(decoder_id).unwrap(),
        LinkStats {
            peer_read_bytes: read,
            ..ZERO
        },
        "{transport}: after a pull of 3 blocks"
    );
    assert_eq!(d.link_stats(prompt_id).unwrap(), ZERO, "{transport}");

    d.cache_manager()
        .push_blocks(&key, &local, &[0, 1], &[6, 5], None)
        .unwrap();
    assert_eq!(
        p.link_stats(decoder_id).unwrap(),
        LinkStats {
            peer_read_bytes: read,
            peer_write_bytes: 2 * BLOCK * TENSORS,
            ..ZERO
        },
        "{transport}: after a push of 2 blocks"
    );
    assert_eq!(d.link_stats(prompt_id).unwrap(), ZERO, "{transport}");

    // A refused request (block 8 of 8) moves nothing and counts nothing.
    let e = d
        .cache_manager()
        .push_blocks(&key, &local, &[0], &[8], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    let after = p.link_stats(decoder_id).unwrap();
    assert_eq!(after.peer_write_bytes, 2 * BLOCK * TENSORS, "{transport}");
    assert_eq!(after.requests_fenced, 0, "{transport}");
}

#[test]
fn counts_the_bytes_the_peer_moved_over_tcp() {
    counts_the_bytes_the_peer_moved(411, 412, "tcp");
}

#[test]
fn counts_the_bytes_the_peer_moved_over_shm() {
    counts_the_bytes_the_peer_moved(421, 422, "shm");
}

#[test]
fn rdma_protection_from_raw_and_back() {
    for p in [
        RdmaProtection::None,
        RdmaProtection::Window,
        RdmaProtection::LinkPd,
        RdmaProtection::Region,
    ] {
        assert_eq!(RdmaProtection::from_raw(p.raw()), Some(p));
    }
    assert_eq!(RdmaProtection::from_raw(3), Some(RdmaProtection::Region));
    assert_eq!(RdmaProtection::from_raw(4), None);
}
