//! [`ClusterInfo`] and [`IpInfo`]: whom `link_clusters` links to, and the C
//! structs they become for the length of one call.

use std::ffi::CString;

use llmlink_sys as sys;

use crate::error::{c_string, Result};
use crate::Role;

/// One address: an IPv4 or IPv6 literal and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpInfo {
    /// IPv4 or IPv6 literal (no brackets).
    pub ip: String,
    /// Port.
    pub port: u16,
}

impl IpInfo {
    /// `ip:port`.
    pub fn new(ip: impl Into<String>, port: u16) -> IpInfo {
        IpInfo {
            ip: ip.into(),
            port,
        }
    }
}

/// A remote cluster to link to or unlink from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster id the remote engine was created with.
    pub remote_cluster_id: u64,
    /// The role the remote engine must have; `None` accepts any.
    pub remote_role: Option<Role>,
    /// Local interfaces to use, one per NIC (the port is advisory).
    pub local_ip_infos: Vec<IpInfo>,
    /// Where the remote engine listens, tried in order.
    pub remote_ip_infos: Vec<IpInfo>,
}

impl ClusterInfo {
    /// A cluster reached at `remote`, of any role, from any local interface.
    pub fn new(remote_cluster_id: u64, remote: IpInfo) -> ClusterInfo {
        ClusterInfo {
            remote_cluster_id,
            remote_ip_infos: vec![remote],
            ..ClusterInfo::default()
        }
    }

    /// Requires the remote engine to have `role`.
    pub fn with_remote_role(mut self, role: Role) -> ClusterInfo {
        self.remote_role = Some(role);
        self
    }

    /// Adds a local interface to bind.
    pub fn with_local_ip(mut self, local: IpInfo) -> ClusterInfo {
        self.local_ip_infos.push(local);
        self
    }
}

/// The C view of a slice of [`ClusterInfo`]. It owns the C strings and ip
/// arrays the C structs point into, so the pointers stay valid for as long
/// as this value lives; the call that uses them borrows it.
pub(crate) struct CClusters {
    // Kept only so the pointers in `ips` and `infos` stay valid.
    _strings: Vec<CString>,
    // One Vec per cluster and direction; never resized after the pointers
    // are taken.
    _ips: Vec<Vec<sys::llmlink_ip_info_t>>,
    infos: Vec<sys::llmlink_cluster_info_t>,
}

impl CClusters {
    pub(crate) fn new(clusters: &[ClusterInfo]) -> Result<CClusters> {
        let mut strings = Vec::new();
        let mut ips: Vec<Vec<sys::llmlink_ip_info_t>> = Vec::with_capacity(clusters.len() * 2);
        for (i, c) in clusters.iter().enumerate() {
            for (what, list) in [("local", &c.local_ip_infos), ("remote", &c.remote_ip_infos)] {
                let mut v = Vec::with_capacity(list.len());
                for (j, ip) in list.iter().enumerate() {
                    let s = c_string(&format!("clusters[{i}].{what}_ip_infos[{j}].ip"), &ip.ip)?;
                    // The CString's heap buffer does not move when the
                    // CString itself is moved into `strings`.
                    v.push(sys::llmlink_ip_info_t {
                        ip: s.as_ptr(),
                        port: ip.port,
                    });
                    strings.push(s);
                }
                ips.push(v);
            }
        }
        let infos = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (local, remote) = (&ips[2 * i], &ips[2 * i + 1]);
                sys::llmlink_cluster_info_t {
                    remote_cluster_id: c.remote_cluster_id,
                    remote_role: c.remote_role.map_or(0, Role::raw),
                    local_ip_infos: ptr_or_null(local),
                    num_local_ip_infos: local.len(),
                    remote_ip_infos: ptr_or_null(remote),
                    num_remote_ip_infos: remote.len(),
                }
            })
            .collect();
        Ok(CClusters {
            _strings: strings,
            _ips: ips,
            infos,
        })
    }

    pub(crate) fn as_slice(&self) -> &[sys::llmlink_cluster_info_t] {
        &self.infos
    }
}

/// NULL for an empty list, as the header's "may be NULL with 0".
fn ptr_or_null<T>(v: &[T]) -> *const T {
    if v.is_empty() {
        std::ptr::null()
    } else {
        v.as_ptr()
    }
}
