//! The confined handle against symlinks and `..` at every depth, with `openat2`
//! and with the `O_NOFOLLOW` walk.

use super::*;
use std::os::unix::fs::symlink;

/// `<tmp>/allowed/{a/b/c/f.txt, in.txt}` and `<tmp>/outside/{secret.txt, d/x.txt}`.
fn layout(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!("promduck-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let allowed = base.join("allowed");
    let outside = base.join("outside");
    std::fs::create_dir_all(allowed.join("a/b/c")).unwrap();
    std::fs::create_dir_all(outside.join("d")).unwrap();
    std::fs::write(allowed.join("a/b/c/f.txt"), "inside").unwrap();
    std::fs::write(allowed.join("in.txt"), "inside").unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::fs::write(outside.join("d/x.txt"), "secret").unwrap();
    (base, allowed, outside)
}

fn handles(allowed: &Path) -> Vec<(&'static str, Fs)> {
    vec![
        ("openat2", Fs::confined([allowed.to_path_buf()], [])),
        ("walk", Fs::confined_walking(vec![allowed.to_path_buf()])),
    ]
}

fn refused_here(r: io::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(e) => assert!(is_refusal(&e), "{what}: {e:?} is not a refusal"),
        Ok(v) => panic!("{what}: allowed ({v:?})"),
    }
}

#[test]
fn symlinks_out_are_refused_at_every_depth() {
    let (base, allowed, outside) = layout("depth");
    // depth 1: a folder link; depth 2 and 3: file and folder links further down.
    symlink(outside.join("d"), allowed.join("d1")).unwrap();
    symlink(outside.join("secret.txt"), allowed.join("a/s2.txt")).unwrap();
    symlink(outside.join("d"), allowed.join("a/b/d3")).unwrap();
    symlink(
        "../../../../outside/secret.txt",
        allowed.join("a/b/c/rel.txt"),
    )
    .unwrap();
    symlink(outside.join("secret.txt"), allowed.join("abs.txt")).unwrap();
    for (how, fs) in handles(&allowed) {
        for p in [
            allowed.join("d1/x.txt"),
            allowed.join("a/s2.txt"),
            allowed.join("a/b/d3/x.txt"),
            allowed.join("a/b/c/rel.txt"),
            allowed.join("abs.txt"),
            allowed.join("../outside/secret.txt"),
            allowed.join("a/../../outside/secret.txt"),
            outside.join("secret.txt"),
        ] {
            let what = format!("{how} {}", p.display());
            refused_here(fs.open(&p), &what);
            refused_here(fs.metadata(&p), &what);
            refused_here(fs.canonicalize(&p), &what);
        }
        refused_here(fs.read_dir(&allowed.join("d1")), how);
        refused_here(fs.read_dir(&allowed.join("a/b/d3")), how);
        refused_here(fs.read_dir(&outside), how);
        // Writes through a link, and a temporary file in a linked folder.
        refused_here(fs.temp_file(&allowed.join("d1"), ".t.", ".tmp", 6), how);
        refused_here(fs.create_dir_all(&allowed.join("d1/new")), how);
        refused_here(fs.sync_dir(&allowed.join("a/b/d3")), how);
        // Inside is fine, through plain folders.
        assert_eq!(
            std::io::read_to_string(fs.open(&allowed.join("a/b/c/f.txt")).unwrap()).unwrap(),
            "inside"
        );
        assert!(fs.is_dir(&allowed.join("a/b")), "{how}");
        let names: Vec<_> = fs
            .read_dir(&allowed.join("a"))
            .unwrap()
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
            .collect();
        assert!(
            names.contains(&("s2.txt".into(), Kind::Symlink)),
            "{names:?}"
        );
        assert!(names.contains(&("b".into(), Kind::Dir)), "{names:?}");
        // lstat of a link itself is inside.
        assert!(fs
            .symlink_metadata(&allowed.join("a/s2.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // Nothing outside changed.
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "secret"
    );
    assert_eq!(std::fs::read_dir(outside.join("d")).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn rename_and_delete_through_a_symlinked_parent_are_refused() {
    let (base, allowed, outside) = layout("rename");
    symlink(outside.join("d"), allowed.join("day")).unwrap();
    symlink(outside.join("d"), allowed.join("a/b/day")).unwrap();
    for (how, fs) in handles(&allowed) {
        for parent in [allowed.join("day"), allowed.join("a/b/day")] {
            refused_here(fs.remove_file(&parent.join("x.txt")), how);
            refused_here(
                fs.rename(&parent.join("x.txt"), &allowed.join("got.txt")),
                how,
            );
            refused_here(
                fs.rename(&allowed.join("in.txt"), &parent.join("planted.txt")),
                how,
            );
            refused_here(
                fs.hard_link(&parent.join("x.txt"), &allowed.join("h.txt")),
                how,
            );
            refused_here(fs.remove_dir(&parent.join("sub")), how);
        }
        refused_here(fs.remove_file(&outside.join("secret.txt")), how);
        refused_here(fs.remove_file(&allowed.join("../outside/secret.txt")), how);
    }
    assert!(outside.join("d/x.txt").exists());
    assert!(outside.join("secret.txt").exists());
    assert!(!outside.join("d/planted.txt").exists());
    assert!(allowed.join("in.txt").exists());
    // Removing the link itself is inside (unlinkat never follows the final name).
    let fs = Fs::confined([allowed.clone()], []);
    fs.remove_file(&allowed.join("day")).unwrap();
    assert!(outside.join("d/x.txt").exists());
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn links_that_stay_inside_are_followed_with_openat2() {
    let (base, allowed, _outside) = layout("inside");
    symlink("a/b", allowed.join("ab")).unwrap();
    symlink("../../in.txt", allowed.join("a/b/up.txt")).unwrap();
    symlink(allowed.join("a/b/c/f.txt"), allowed.join("abs_in.txt")).unwrap();
    let fs = Fs::confined([allowed.clone()], []);
    assert!(fs.is_file(&allowed.join("ab/c/f.txt")));
    assert!(fs.is_file(&allowed.join("a/b/up.txt")));
    // An absolute link is refused under RESOLVE_BENEATH even when it points inside
    // (as the kernel resolves it from `/`).
    refused_here(fs.open(&allowed.join("abs_in.txt")), "absolute link");
    assert_eq!(
        fs.canonicalize(&allowed.join("ab/c")).unwrap(),
        std::fs::canonicalize(allowed.join("a/b/c")).unwrap()
    );
    // The walk follows no symlink at all.
    let walk = Fs::confined_walking(vec![allowed.clone()]);
    refused_here(walk.open(&allowed.join("ab/c/f.txt")), "walk");
    assert!(walk.is_file(&allowed.join("a/b/c/f.txt")));
    assert!(walk.is_file(&allowed.join("a/b/../b/c/f.txt")));
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn writes_stay_beneath_the_root() {
    let (base, allowed, outside) = layout("write");
    for (how, fs) in handles(&allowed) {
        let dir = allowed.join(format!("{how}/2024-03-01"));
        fs.create_dir_all(&dir).unwrap();
        let tmp = fs
            .temp_file(&dir, ".p.parquet.", ".promduck-tmp", 12)
            .unwrap();
        std::io::Write::write_all(&mut tmp.as_file(), b"data").unwrap();
        tmp.persist(&dir.join("p.parquet")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("p.parquet")).unwrap(),
            "data"
        );
        // A dropped temporary file is removed.
        let t = fs.temp_file(&dir, ".q.", ".promduck-tmp", 12).unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        fs.sync_dir(&dir).unwrap();
        fs.rename(&dir.join("p.parquet"), &dir.join("r.parquet"))
            .unwrap();
        fs.hard_link(&dir.join("r.parquet"), &dir.join("h.parquet"))
            .unwrap();
        fs.remove_file(&dir.join("r.parquet")).unwrap();
        fs.remove_file(&dir.join("h.parquet")).unwrap();
        fs.remove_dir(&dir).unwrap();
        // Creating folders outside, or the root's sibling through `..`.
        refused_here(fs.create_dir_all(&allowed.join("../outside/new")), how);
        refused_here(fs.create_dir_all(&outside.join("new")), how);
    }
    assert!(!outside.join("new").exists());
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn allowed_files_are_read_only_and_exact() {
    let (base, allowed, outside) = layout("files");
    let fs = Fs::confined([], [outside.join("secret.txt")]);
    assert!(fs.is_file(&outside.join("secret.txt")));
    refused_here(fs.open(&outside.join("d/x.txt")), "another file");
    refused_here(fs.temp_file(&outside, ".x", ".tmp", 6), "a folder");
    refused_here(fs.remove_file(&outside.join("secret.txt")), "delete");
    refused_here(fs.open(&allowed.join("in.txt")), "no folder allowed");
    // No root at all: everything refused.
    refused_here(
        Fs::confined([], []).open(&allowed.join("in.txt")),
        "no roots",
    );
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn unconfined_follows_links_anywhere() {
    let (base, allowed, outside) = layout("unconfined");
    symlink(outside.join("d"), allowed.join("d1")).unwrap();
    let fs = Fs::unconfined();
    assert!(fs.is_file(&allowed.join("d1/x.txt")));
    assert_eq!(fs.read_dir(&allowed.join("d1")).unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(base);
}
