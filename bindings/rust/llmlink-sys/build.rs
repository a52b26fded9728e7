//! Build script of llmlink-sys.
//!
//! Two ways to get the C library, as libgit2-sys and zstd-sys do:
//!  - default: compile the C sources, with the includes, defines and flags
//!    that `core/sources.list` lists (the one list the Makefile and the
//!    Python setup.py read too), with the `cc` crate and link them
//!    statically. The sources are, in this order: `LLMLINK_SRC_DIR` if set;
//!    the repository when this crate is the one inside it
//!    (bindings/rust/llmlink-sys of a checkout: edits to core/ are seen at
//!    once); else the crate's own `csrc/`, the copy of core/ and ffi/ that
//!    `make rust-vendor` writes and the published crate carries;
//!  - `LLMLINK_SYS_USE_PKG_CONFIG=1` (or the `pkg-config` feature): link an
//!    installed llmlink found through pkg-config, whose version must lie in
//!    the range this crate was written for.
//!
//! The bindings are src/bindings.rs, generated from ffi/llmlink.h and
//! shipped (no bindgen, no libclang needed); with the `bindgen` feature they
//! are generated at build time from the header of the library being linked.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Set to 1 to link an installed llmlink found through pkg-config.
const ENV_USE_PKG_CONFIG: &str = "LLMLINK_SYS_USE_PKG_CONFIG";
/// Root of an llmlink source tree (the folder with core/ and ffi/), for a
/// crate built outside the repository.
const ENV_SRC_DIR: &str = "LLMLINK_SRC_DIR";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={ENV_USE_PKG_CONFIG}");
    println!("cargo:rerun-if-env-changed={ENV_SRC_DIR}");

    let header = if use_pkg_config() {
        link_installed()
    } else {
        build_from_source(&source_root())
    };
    #[cfg(feature = "bindgen")]
    generate_bindings(&header);
    #[cfg(not(feature = "bindgen"))]
    let _ = header; // the shipped src/bindings.rs is used
}

fn use_pkg_config() -> bool {
    if env::var_os("CARGO_FEATURE_PKG_CONFIG").is_some() {
        return true;
    }
    matches!(
        env::var(ENV_USE_PKG_CONFIG).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Where the C sources are: LLMLINK_SRC_DIR; else the repository, when
/// this crate is its bindings/rust/llmlink-sys (not a copy elsewhere, such
/// as the unpacked .crate that `cargo package` verifies); else csrc/.
fn source_root() -> PathBuf {
    let root = if let Some(dir) = env::var_os(ENV_SRC_DIR) {
        PathBuf::from(dir)
    } else {
        let manifest =
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let repo = manifest.join("../../..");
        let in_repo = repo.join("core/sources.list").is_file()
            && fs::canonicalize(repo.join("bindings/rust/llmlink-sys")).ok()
                == fs::canonicalize(&manifest).ok();
        if in_repo {
            repo
        } else {
            manifest.join("csrc")
        }
    };
    // For whoever reads the build script's output (the out-of-tree test
    // checks that a packaged crate compiles its own csrc/).
    println!("cargo:c_sources={}", root.display());
    root
}

/// core/sources.list: "KIND VALUE" lines (src, include, define, std, flag,
/// lib);
/// '#' starts a comment. Returns (kind, value) pairs in file order.
fn read_sources_list(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("llmlink-sys: cannot read {}: {e}", path.display()));
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [kind, value] => entries.push((kind.to_string(), value.to_string())),
            _ => panic!("llmlink-sys: {}: bad line: {line:?}", path.display()),
        }
    }
    entries
}

/// Compiles the sources of core/sources.list with its flags, as the top
/// Makefile does (hidden visibility: only llmlink_* is exported, through
/// LLMLINK_EXTERN). Returns the header to generate bindings from.
fn build_from_source(root: &Path) -> PathBuf {
    let core = root.join("core");
    let ffi = root.join("ffi");
    let header = ffi.join("llmlink.h");
    if !header.is_file() {
        panic!(
            "llmlink-sys: {} not found (a crate without its csrc/: run `make rust-vendor` \
             before packaging); set {ENV_SRC_DIR} to an llmlink source tree \
             or {ENV_USE_PKG_CONFIG}=1 to use an installed llmlink",
            header.display()
        );
    }
    // A directory here makes cargo rerun when any file inside it changes.
    println!("cargo:rerun-if-changed={}", core.display());
    println!("cargo:rerun-if-changed={}", ffi.display());

    let list = core.join("sources.list");
    let entries = read_sources_list(&list);
    let mut build = cc::Build::new();
    let mut nsrc = 0;
    for (kind, value) in &entries {
        match kind.as_str() {
            "src" => {
                let src = root.join(value);
                // Files in subfolders of core/ are not seen by the directory
                // watch above: name each.
                println!("cargo:rerun-if-changed={}", src.display());
                build.file(src);
                nsrc += 1;
            }
            "include" => {
                build.include(root.join(value));
            }
            "define" => {
                build.define(value, None);
            }
            "std" => {
                build.std(value);
            }
            "flag" => {
                build.flag(value);
            }
            "lib" => {} // linked below, after the library itself
            _ => panic!("llmlink-sys: {}: unknown kind {kind:?}", list.display()),
        }
    }
    if nsrc == 0 {
        panic!("llmlink-sys: no src line in {}", list.display());
    }
    build.pic(true).flag_if_supported("-Wno-unused-parameter");
    build.compile("llmlink");
    // The system libraries of core/sources.list (OpenSSL's libssl and
    // libcrypto), in its order, after the static library that needs them.
    for (kind, value) in &entries {
        if kind == "lib" {
            println!("cargo:rustc-link-lib={value}");
        }
    }
    // The shared library's own link line: -pthread and (as needed) -lm.
    println!("cargo:rustc-link-lib=pthread");
    println!("cargo:rustc-link-lib=m");

    // Metadata for crates that depend on this one (DEP_LLMLINK_INCLUDE,
    // DEP_LLMLINK_ROOT), as links = "llmlink" makes cargo pass them on.
    println!("cargo:include={}", ffi.display());
    println!("cargo:root={}", env::var("OUT_DIR").expect("OUT_DIR"));
    header
}

/// The range of library versions this crate's bindings fit: same major, and
/// while the major is 0 the same minor (0.x releases may change the ABI),
/// at or above this crate's version.
fn version_range() -> (String, String) {
    let major: u32 = env::var("CARGO_PKG_VERSION_MAJOR")
        .unwrap()
        .parse()
        .unwrap();
    let minor: u32 = env::var("CARGO_PKG_VERSION_MINOR")
        .unwrap()
        .parse()
        .unwrap();
    let patch: u32 = env::var("CARGO_PKG_VERSION_PATCH")
        .unwrap()
        .parse()
        .unwrap();
    let low = format!("{major}.{minor}.{patch}");
    let high = if major == 0 {
        format!("0.{}.0", minor + 1)
    } else {
        format!("{}.0.0", major + 1)
    };
    (low, high)
}

/// Links the installed llmlink that pkg-config knows (the pkg-config crate
/// prints the link lines and its own rerun-if-env-changed lines). Returns
/// the installed header, so the bindings match the library.
fn link_installed() -> PathBuf {
    let (low, high) = version_range();
    let lib = pkg_config::Config::new()
        .range_version(low.as_str()..high.as_str())
        .probe("llmlink")
        .unwrap_or_else(|e| {
            panic!("llmlink-sys: no installed llmlink >= {low}, < {high} through pkg-config: {e}")
        });
    let header = lib
        .include_paths
        .iter()
        .map(|dir| dir.join("llmlink.h"))
        .chain(std::iter::once(PathBuf::from("/usr/include/llmlink.h")))
        .find(|h| h.is_file())
        .unwrap_or_else(|| {
            panic!(
                "llmlink-sys: llmlink.h not found in {:?}",
                lib.include_paths
            )
        });
    println!("cargo:rerun-if-changed={}", header.display());
    if let Some(dir) = header.parent() {
        println!("cargo:include={}", dir.display());
    }
    header
}

#[cfg(feature = "bindgen")]
fn generate_bindings(header: &Path) {
    // clang-sys reads these to find libclang.
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-env-changed=BINDGEN_EXTRA_CLANG_ARGS");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_function("llmlink_.*")
        .allowlist_type("llmlink_.*")
        .allowlist_var("LLMLINK_.*")
        // C enums as plain integer constants: a value that C returns and
        // Rust does not know (a newer library) is then just a number, never
        // an invalid Rust enum (undefined behaviour).
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .generate_comments(true)
        .formatter(bindgen::Formatter::Prettyplease)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("llmlink-sys: bindgen failed on {}: {e}", header.display()));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("llmlink-sys: cannot write {}: {e}", out.display()));
}
