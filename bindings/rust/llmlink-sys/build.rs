//! Build script of llmlink-sys.
//!
//! Two ways to get the C library, as libgit2-sys and zstd-sys do:
//!  - default: compile the repository's C sources (`core/*.c ffi/*.c`, found
//!    by glob so new files need no change here) with the `cc` crate and link
//!    them statically;
//!  - `LLMLINK_SYS_USE_PKG_CONFIG=1` (or the `pkg-config` feature): link an
//!    installed llmlink found through pkg-config, whose version must lie in
//!    the range this crate was written for.
//!
//! Either way bindgen generates the bindings from the `llmlink.h` that
//! belongs to the library being linked.

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
    // clang-sys reads these to find libclang; cc reads CC/CFLAGS itself.
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-env-changed=BINDGEN_EXTRA_CLANG_ARGS");

    let header = if use_pkg_config() {
        link_installed()
    } else {
        build_from_source(&source_root())
    };
    generate_bindings(&header);
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

/// The llmlink checkout this crate lives in (bindings/rust/llmlink-sys is
/// three levels below it), unless LLMLINK_SRC_DIR names another.
fn source_root() -> PathBuf {
    if let Some(dir) = env::var_os(ENV_SRC_DIR) {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest.join("../../..")
}

/// Sorted `dir/*.c`: a glob, so files added to core/ or ffi/ are built too.
fn c_sources(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("llmlink-sys: cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    files.sort();
    files
}

/// Compiles core/*.c ffi/*.c with the flags the top Makefile uses for the
/// library (hidden visibility: only llmlink_* is exported, through
/// LLMLINK_EXTERN). Returns the header to generate bindings from.
fn build_from_source(root: &Path) -> PathBuf {
    let core = root.join("core");
    let ffi = root.join("ffi");
    let header = ffi.join("llmlink.h");
    if !header.is_file() {
        panic!(
            "llmlink-sys: {} not found; set {ENV_SRC_DIR} to an llmlink source tree \
             or {ENV_USE_PKG_CONFIG}=1 to use an installed llmlink",
            header.display()
        );
    }
    // A directory here makes cargo rerun when any file inside it changes.
    println!("cargo:rerun-if-changed={}", core.display());
    println!("cargo:rerun-if-changed={}", ffi.display());

    let mut sources = c_sources(&core);
    sources.extend(c_sources(&ffi));
    if sources.is_empty() {
        panic!(
            "llmlink-sys: no C sources in {} or {}",
            core.display(),
            ffi.display()
        );
    }

    let mut build = cc::Build::new();
    build
        .files(&sources)
        .include(&ffi)
        .include(&core)
        .std("c11")
        .define("_GNU_SOURCE", None)
        .define("LLMLINK_BUILDING", None)
        .pic(true)
        .flag("-fvisibility=hidden")
        .flag("-pthread")
        .flag_if_supported("-Wno-unused-parameter");
    build.compile("llmlink");
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

fn generate_bindings(header: &Path) {
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
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("llmlink-sys: bindgen failed on {}: {e}", header.display()));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("llmlink-sys: cannot write {}: {e}", out.display()));
}
