//! The page: tools (wasm32 target, the wasm-bindgen CLI of exactly Cargo.lock's version,
//! binaryen's wasm-opt from npm, and for tests Chromium + chromedriver), and the build:
//! cargo → wasm-bindgen → wasm-opt → content-hashed files with gzip/brotli twins in `target/page`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::Digest;

use crate::{cargo, run};

/// binaryen from npm: Debian's binaryen 108 produces a module that silently breaks the page.
const BINARYEN: &str = "binaryen@132";
/// What one visitor may download for the page, gzip (docs/page.md: the page's size).
const PAGE_BUDGET_KIB: f64 = 150.0;
/// The toolchain the page is built with: a pinned nightly, for two things stable cannot do that
/// take 35 KiB gzip off each bundle (measured on the customer bundle: 180.5 -> 163.9 KiB for the
/// first, -> 159.6 with the second): `std` rebuilt with `panic = immediate-abort` (no panic
/// messages, formatting or unwinding paths; a panic in the page traps, as it already did), and
/// `-Zlocation-detail=none -Zfmt-debug=none` (no source paths, no `Debug` bodies: the page prints
/// neither). Pinned, so the size the budget checks moves only when this line does. Only
/// `rust-src` is needed: `-Zbuild-std` builds the wasm32 `std` from it.
pub const PAGE_TOOLCHAIN: &str = "nightly-2026-05-20";
const PAGE_RUSTFLAGS: &str = "-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none";
/// terser from npm: minifies wasm-bindgen's JS glue (about 2 KB gzip per bundle).
const TERSER: &str = "terser@5";

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The exact wasm-bindgen version in Cargo.lock: the CLI must match it byte for byte.
fn locked_wasm_bindgen(root: &Path) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")).and_then(|v| v.strip_suffix('"'))
        {
            return Ok(v.to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn wasm_opt(root: &Path) -> PathBuf {
    root.join("target/tools/node_modules/.bin/wasm-opt")
}

/// Installs what building the page needs; with `browser`, what the browser tests need too.
pub fn tools(root: &Path, browser: bool) -> anyhow::Result<()> {
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t.trim() == "wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let sources =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", PAGE_TOOLCHAIN]))
            .unwrap_or_default();
    if !sources.lines().any(|c| c.trim() == "rust-src") {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            PAGE_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let want = locked_wasm_bindgen(root)?;
    let have = output(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) != Some(want.as_str()) {
        // Not --locked: the CLI's own lock file pins crates that no longer build on new toolchains.
        run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))?;
    }
    let binaryen_version = std::fs::read_to_string(root.join("target/tools/node_modules/binaryen/package.json"))
        .ok()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| p["version"].as_str().map(str::to_owned));
    let terser_present = root.join("target/tools/node_modules/.bin/terser").exists();
    if !binaryen_version.as_deref().is_some_and(|v| v.starts_with("132."))
        || !wasm_opt(root).exists()
        || !terser_present
    {
        std::fs::create_dir_all(root.join("target/tools"))?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(root.join("target/tools"))
            .args([BINARYEN, TERSER]))?;
    }
    if browser && !(Path::new("/usr/bin/chromedriver").exists() && chromium().is_some()) {
        let root_user = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
        let apt = |args: &[&str]| {
            let mut c = if root_user {
                Command::new("apt-get")
            } else {
                let mut s = Command::new("sudo");
                s.args(["-n", "apt-get"]);
                s
            };
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run(&mut apt(&["update"]))?;
        run(&mut apt(&["install", "-y", "chromium", "chromium-driver"]))?;
    }
    Ok(())
}

/// The Chromium binary the browser tests drive.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

/// A content hash for cache-busting file names (hashed files are served `immutable`).
fn short_hash(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` as `dir/name` plus `name.gz` and `name.br` (served when the client accepts).
fn write_compressed(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<(usize, usize)> {
    std::fs::write(dir.join(name), bytes)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    let gz = gz.finish()?;
    std::fs::write(dir.join(format!("{name}.gz")), &gz)?;
    let mut br = Vec::new();
    brotli::BrotliCompress(
        &mut &bytes[..],
        &mut br,
        &brotli::enc::BrotliEncoderParams { quality: 11, ..Default::default() },
    )?;
    std::fs::write(dir.join(format!("{name}.br")), &br)?;
    Ok((bytes.len(), gz.len()))
}

/// One bundle: the crate built with `feature`, through wasm-bindgen and wasm-opt, written
/// content-hashed into `assets`. Returns (js name, wasm name, wasm raw bytes, gzip bytes of both).
fn bundle(root: &Path, feature: &str, assets: &Path) -> anyhow::Result<(String, String, usize, usize)> {
    run(Command::new("rustup")
        .args(["run", PAGE_TOOLCHAIN, "cargo", "build", "--locked", "--profile", "site"])
        .args(["--target", "wasm32-unknown-unknown", "-Zbuild-std=std,panic_abort", "-p", "firstcome-frontend"])
        .args(["--no-default-features", "--features", feature])
        // The target's flags only: build scripts and proc-macros are host code, built as usual.
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", PAGE_RUSTFLAGS)
        // `cargo xtask` runs under the stable toolchain, whose variables would pick its rustc.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO"))?;
    let staging = root.join("target/site-staging").join(feature);
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("wasm-bindgen")
        .arg(root.join("target/wasm32-unknown-unknown/site/firstcome_frontend.wasm"))
        .args(["--target", "web", "--no-typescript", "--out-name", feature, "--out-dir"])
        .arg(&staging))?;
    let wasm = staging.join(format!("{feature}_bg.wasm"));
    run(Command::new(wasm_opt(root))
        // --zero-filled-memory: the module's memory is its own (exported, not imported), so it
        // starts zeroed and zero bytes need no data segment (-1.2 KiB gzip on the marketing
        // bundle); --converge repeats -Oz until it stops shrinking.
        .args(["-Oz", "--converge", "--zero-filled-memory", "--strip-producers"])
        .args(["--enable-bulk-memory", "--enable-nontrapping-float-to-int"])
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))?;
    let js = staging.join(format!("{feature}.js"));
    let minified = staging.join(format!("{feature}.min.js"));
    run(Command::new(root.join("target/tools/node_modules/.bin/terser"))
        .arg(&js)
        .args(["--module", "--compress", "--mangle", "-o"])
        .arg(&minified))?;
    let wasm_bytes = std::fs::read(&wasm)?;
    let js_bytes = std::fs::read(&minified)?;
    let wasm_name = format!("{feature}-{}.wasm", short_hash(&wasm_bytes));
    let js_name = format!("{feature}-{}.js", short_hash(&js_bytes));
    let (raw, wasm_gz) = write_compressed(assets, &wasm_name, &wasm_bytes)?;
    let (_, js_gz) = write_compressed(assets, &js_name, &js_bytes)?;
    Ok((js_name, wasm_name, raw, wasm_gz + js_gz))
}

/// Where the page is built: what is deployed to S3, every file of it. Not `target/site`, which is
/// where cargo keeps the `site` profile's host artifacts (build scripts, proc-macros: 200 MB).
pub const PAGE_DIR: &str = "target/page";

/// Builds the page into `target/page`, checks that it holds the page's files and nothing else,
/// and returns its path.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let site = root.join(PAGE_DIR);
    let _ = std::fs::remove_dir_all(&site);
    let assets = site.join("assets");
    std::fs::create_dir_all(&assets)?;
    let (js, wasm, wasm_raw, event_gz) = bundle(root, "event", &assets)?;
    let (admin_js, admin_wasm, admin_raw, admin_gz) = bundle(root, "admin", &assets)?;
    let css_bytes = std::fs::read(root.join("frontend/style.css"))?;
    let css_name = format!("style-{}.css", short_hash(&css_bytes));
    let (_, css_gz) = write_compressed(&assets, &css_name, &css_bytes)?;
    let index = std::fs::read_to_string(root.join("frontend/index.html"))?
        .replace("{{JS}}", &js)
        .replace("{{WASM}}", &wasm)
        .replace("{{ADMIN_JS}}", &admin_js)
        .replace("{{ADMIN_WASM}}", &admin_wasm)
        .replace("{{CSS}}", &css_name);
    let (_, index_gz) = write_compressed(&site, "index.html", index.as_bytes())?;
    let sizes = format!(
        "what a visitor downloads, gzip, with the bundle's JS, the CSS and index.html: customer pages {:.1} KiB \
         (wasm {:.1} KiB raw), marketing page {:.1} KiB (wasm {:.1} KiB raw)",
        (event_gz + css_gz + index_gz) as f64 / 1024.0,
        wasm_raw as f64 / 1024.0,
        (admin_gz + css_gz + index_gz) as f64 / 1024.0,
        admin_raw as f64 / 1024.0
    );
    eprintln!("xtask> page built in {}: {sizes}", site.display());
    // Beside the page, not in it: everything in the page's directory is uploaded.
    std::fs::write(root.join("target/page-sizes.txt"), format!("{sizes}\n"))?;
    check_only_page_files(&site)?;
    // A failure, not a warning: the toolchain is pinned (PAGE_TOOLCHAIN), so only a change to
    // the page or its dependencies moves the figure.
    let over: Vec<String> = [("customer", event_gz), ("marketing", admin_gz)]
        .into_iter()
        .map(|(page, gz)| (page, (gz + css_gz + index_gz) as f64 / 1024.0))
        .filter(|(_, kib)| *kib > PAGE_BUDGET_KIB)
        .map(|(page, kib)| format!("the {page} page is {kib:.1} KiB gzip"))
        .collect();
    if !over.is_empty() {
        bail!("over the page's {PAGE_BUDGET_KIB} KiB gzip budget: {}", over.join("; "));
    }
    Ok(site)
}

/// Whether `path` (relative to the page's directory) is one of the page's files: `index.html`
/// and its compressed twins, and content-hashed assets (`name-<12 hex>.{js,wasm,css}` and twins).
fn is_page_file(path: &Path) -> bool {
    let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
    let plain = |name: &str| name.strip_suffix(".br").or_else(|| name.strip_suffix(".gz")).unwrap_or(name).to_owned();
    match parts.as_slice() {
        // `config.json` is written by the deploy (the user pool's ids), beside the built page.
        [name] => plain(name) == "index.html" || *name == "config.json",
        ["assets", name] => {
            let name = plain(name);
            let Some((stem, ext)) = name.rsplit_once('.') else { return false };
            let Some((base, hash)) = stem.rsplit_once('-') else { return false };
            ["js", "wasm", "css"].contains(&ext)
                && !base.is_empty()
                && base.bytes().all(|b| b.is_ascii_lowercase())
                && hash.len() == 12
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        }
        _ => false,
    }
}

/// Refuses a page directory holding anything but the page's files (build artifacts, reports,
/// stray files would all be uploaded and served by CloudFront).
pub fn check_only_page_files(dir: &Path) -> anyhow::Result<()> {
    let mut stray = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let rel = path.strip_prefix(dir)?.to_owned();
            if path.is_dir() {
                if rel == Path::new("assets") {
                    stack.push(path);
                } else {
                    stray.push(rel);
                }
            } else if !is_page_file(&rel) {
                stray.push(rel);
            }
        }
    }
    if !stray.is_empty() {
        stray.sort();
        anyhow::bail!("{} holds files that are not the page's and would be deployed: {stray:?}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_directory_may_hold_only_the_page() {
        let page = |stray: Option<&str>| {
            let dir = tempfile::tempdir().unwrap();
            let assets = dir.path().join("assets");
            std::fs::create_dir_all(&assets).unwrap();
            for f in ["index.html", "index.html.br", "index.html.gz"] {
                std::fs::write(dir.path().join(f), "x").unwrap();
            }
            for f in [
                "event-0123456789ab.wasm",
                "event-0123456789ab.wasm.br",
                "admin-fedcba987654.js.gz",
                "style-aaaaaaaaaaaa.css",
            ] {
                std::fs::write(assets.join(f), "x").unwrap();
            }
            if let Some(stray) = stray {
                let path = dir.path().join(stray);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, "x").unwrap();
            }
            dir
        };
        check_only_page_files(page(None).path()).unwrap();
        // What cargo leaves in a profile's directory, and other strays, are each refused by name.
        for (stray, named) in [
            ("deps/libfoo.rlib", "deps"),
            ("build/x/output", "build"),
            (".fingerprint/a", ".fingerprint"),
            ("sizes.txt", "sizes.txt"),
            ("assets/event.wasm", "assets/event.wasm"),
            ("assets/x/y.js", "assets/x"),
            ("assets/Event-0123456789ab.js", "assets/Event-0123456789ab.js"),
        ] {
            let err = check_only_page_files(page(Some(stray)).path()).unwrap_err().to_string();
            assert!(err.contains(&format!("{named:?}")), "{stray}: {err}");
        }
    }
}
