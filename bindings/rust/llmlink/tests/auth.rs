//! Pre-shared-key authentication (`llmlink.AuthKeyFile`) between engines of
//! this process over loopback: the same key file links, another key fails
//! the cluster with `Status::AUTH_FAILED`, a key file others can read is
//! refused at init.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use common::*;
use llmlink::{DataDist, Options, Role, Status};

/// A fresh directory for this test's key files, removed on drop.
struct KeyDir(PathBuf);

impl KeyDir {
    fn new(tag: &str) -> KeyDir {
        let dir = std::env::temp_dir().join(format!("llmlink-auth-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("key dir");
        KeyDir(dir)
    }

    /// A key file of 32 bytes derived from `seed`, with `mode`.
    fn key(&self, name: &str, seed: u8, mode: u32) -> String {
        let path = self.0.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("key file");
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ seed).collect();
        f.write_all(&key).expect("write key");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn decoder_with(cluster_id: u64, options: Options) -> DataDist {
    let dd = DataDist::new(Role::Decoder, cluster_id).expect("create decoder");
    dd.init(&options).expect("init decoder");
    dd
}

#[test]
fn the_same_key_file_links() {
    let dir = KeyDir::new("same");
    let key = dir.key("key", 0x5a, 0o600);
    let (p, port) = prompt_with(31, Options::new().set("llmlink.AuthKeyFile", key.as_str()));
    let d = decoder_with(32, Options::new().set("llmlink.AuthKeyFile", key.as_str()));
    let (st, per) = d.link_clusters(&[cluster(31, port)], LINK_TIMEOUT).unwrap();
    assert_eq!((st, per), (Status::SUCCESS, vec![Status::SUCCESS]));
    assert!(d.check_link_status(31).unwrap());
    assert!(p.check_link_status(32).unwrap());
}

#[test]
fn a_wrong_key_fails_with_auth_failed() {
    let dir = KeyDir::new("wrong");
    let (p, port) = prompt_with(
        33,
        Options::new().set("llmlink.AuthKeyFile", dir.key("a", 1, 0o600)),
    );
    let d = decoder_with(
        34,
        Options::new().set("llmlink.AuthKeyFile", dir.key("b", 2, 0o600)),
    );
    let (st, per) = d.link_clusters(&[cluster(33, port)], LINK_TIMEOUT).unwrap();
    assert_eq!(st, Status::LINK_FAILED);
    assert_eq!(per, vec![Status::AUTH_FAILED]);
    assert_eq!(Status::AUTH_FAILED.raw(), 0x5010_B10A);
    assert_eq!(Status::AUTH_FAILED.name(), "LLMLINK_AUTH_FAILED");
    assert!(!d.check_link_status(33).unwrap());
    assert_eq!(p.stats().unwrap().links, 0);
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = KeyDir::new("mode");
    let path = dir.key("open", 3, 0o644);
    let dd = DataDist::new(Role::Decoder, 35).expect("create");
    let err = dd
        .init(&Options::new().set("llmlink.AuthKeyFile", path.as_str()))
        .unwrap_err();
    assert_eq!(err.status(), Status::PARAM_INVALID);
    assert!(err.to_string().contains(&path), "{err}");
}
