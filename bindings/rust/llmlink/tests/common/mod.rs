//! Shared helpers of the integration tests: engines on loopback, ports
//! chosen by the OS, reserved dead ports, byte patterns.
#![allow(dead_code)] // each test binary uses its own subset

pub mod peer;
pub mod xfer;

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use llmlink::{ClusterInfo, DataDist, IpInfo, Options, Role};

/// Bound for every link/unlink call of the tests.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A PROMPT engine listening on 127.0.0.1 at a port the OS chose.
pub fn prompt(cluster_id: u64) -> (DataDist, u16) {
    prompt_with(cluster_id, Options::new())
}

/// A PROMPT engine with extra options.
pub fn prompt_with(cluster_id: u64, extra: Options) -> (DataDist, u16) {
    let dd = DataDist::new(Role::Prompt, cluster_id).expect("create prompt");
    let mut options = extra;
    options.insert("llm.listenIpInfo", "127.0.0.1:0");
    dd.init(&options).expect("init prompt");
    let port = dd.listen_port(0).expect("listen port");
    assert_ne!(port, 0);
    (dd, port)
}

/// An initialized DECODER engine.
pub fn decoder(cluster_id: u64) -> DataDist {
    let dd = DataDist::new(Role::Decoder, cluster_id).expect("create decoder");
    dd.init(&Options::new()).expect("init decoder");
    dd
}

/// The cluster info for a prompt engine on 127.0.0.1:port.
pub fn cluster(id: u64, port: u16) -> ClusterInfo {
    ClusterInfo::new(id, IpInfo::new("127.0.0.1", port))
}

/// A decoder linked to a fresh prompt engine: (prompt, decoder).
pub fn linked_pair(prompt_id: u64, decoder_id: u64) -> (DataDist, DataDist) {
    let (p, port) = prompt(prompt_id);
    let d = decoder(decoder_id);
    let (st, per) = d
        .link_clusters(&[cluster(prompt_id, port)], LINK_TIMEOUT)
        .expect("link");
    assert!(
        st.is_success(),
        "link: {st} {per:?}: {}",
        llmlink::last_error()
    );
    (p, d)
}

/// A 127.0.0.1 port bound by a socket that never listens: connecting is
/// refused, and nobody else can take the port while the fd lives.
pub fn dead_port() -> (OwnedFd, u16) {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind");
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        let rc = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut glen);
        assert_eq!(rc, 0, "getsockname");
        (owned, u16::from_be(got.sin_port))
    }
}

/// The byte at `offset` of tensor `tensor` in a test pattern tagged `tag`:
/// every byte differs from its neighbours and from other tensors/tags, so a
/// misplaced or missing block shows.
pub fn pattern(tag: u8, tensor: usize, offset: usize) -> u8 {
    let x =
        (offset as u64).wrapping_mul(2_654_435_761) ^ ((tensor as u64) << 24) ^ (tag as u64) << 40;
    (x ^ (x >> 7) ^ (x >> 19)) as u8
}

/// Fills a tensor with `pattern`.
pub fn fill(buf: &mut [u8], tag: u8, tensor: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(tag, tensor, i);
    }
}
