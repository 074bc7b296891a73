//! The state directory failing under the running daemon: a full disk (a small tmpfs)
//! and a file system that turns read-only after an error (ext4 with
//! `errors=remount-ro`). Each lives in a mount namespace of its own, held open by a
//! sleeping process so the daemon can be restarted on the same disk. The daemon keeps
//! running, says what is wrong, and catches up without losing a decision.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A file system mounted at `dir` in a private mount namespace.
struct PrivateDisk {
    holder: Child,
    dir: PathBuf,
}

impl PrivateDisk {
    /// Runs `mount` (a shell command mounting something at `dir`) in a new mount
    /// namespace and keeps the namespace open.
    fn new(dir: &Path, mount: &str) -> PrivateDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{mount} && echo mounted && exec sleep 600"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        let out = holder.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "mounted", "the private disk did not mount");
        PrivateDisk {
            holder,
            dir: dir.to_path_buf(),
        }
    }

    /// The command prefix that runs a program in the namespace.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-m", "-t", &self.holder.id().to_string()]
            .map(String::from)
            .to_vec()
    }

    /// Runs `script` with `sh -c` in the namespace; its output.
    fn run(&self, script: &str) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "-m",
                "-t",
                &self.holder.id().to_string(),
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("nsenter")
    }

    /// `rel` under the mount, as seen from outside the namespace.
    fn seen(&self, rel: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id()))
            .join(self.dir.strip_prefix("/").expect("absolute"))
            .join(rel)
    }

    fn start(&self, cfg: &Path) -> Daemon {
        let enter = self.enter();
        let enter: Vec<&str> = enter.iter().map(String::as_str).collect();
        Daemon::start_in(cfg, &enter)
    }

    /// The daemon on this disk, in the network namespace `netns`.
    fn start_in_netns(&self, cfg: &Path, netns: &str) -> Daemon {
        let mut wrapper = self.enter();
        wrapper.extend(["ip", "netns", "exec", netns].map(String::from));
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        Daemon::start_in(cfg, &wrapper)
    }
}

impl Drop for PrivateDisk {
    fn drop(&mut self) {
        // The namespace, its mounts and a loop device's autoclear go with the holder.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn sshd_lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| sshd_line(&offender(i))).collect()
}

fn assert_answers(cfg: &Path) {
    assert!(
        gaoler(cfg, &["ctl", "ping"]).status.success(),
        "the daemon still answers"
    );
}

#[test]
fn a_full_state_disk_is_reported_and_caught_up_once_it_has_room() {
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    let state = cfg.path().join("state");
    let disk = PrivateDisk::new(
        &state,
        &format!("mount -t tmpfs -o size=24m tmpfs '{}'", state.display()),
    );
    let mut d = disk.start(cfg.path());
    let auth = cfg.path().join("auth.log");
    storm(&auth, sshd_lines(0..50), 10, Duration::from_millis(10));
    wait_for(Duration::from_secs(10), "the first 50 bans", || {
        ctl_count(cfg.path(), "banned") == 50
    });
    {
        let mut f = std::fs::File::create(disk.seen("fill")).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    storm(&auth, sshd_lines(50..200), 20, Duration::from_millis(20));
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        d.output().contains("the store refused the bans")
    });
    assert!(
        d.output().contains("No space left on device"),
        "the cause is named"
    );
    assert!(ctl_count(cfg.path(), "banned") < 200);
    assert_answers(cfg.path());
    wait_for(Duration::from_secs(10), "a retry", || {
        d.output()
            .contains("the store still refuses the bans; retrying later")
    });
    assert_answers(cfg.path());
    // Room again: the next retry reopens the database and saves every refused ban.
    std::fs::remove_file(disk.seen("fill")).expect("free the disk");
    wait_for(Duration::from_secs(70), "all 200 bans", || {
        ctl_count(cfg.path(), "banned") == 200
    });
    let log = d.output();
    assert!(log.contains("reopened the state database"), "{log}");
    assert!(
        log.contains("the store took the bans it had refused"),
        "{log}"
    );
    // Saved for real: a restart on the same disk has them all, and reads no line twice.
    d.stop();
    let d = disk.start(cfg.path());
    assert_eq!(ctl_count(cfg.path(), "banned"), 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(failures(cfg.path()), 0, "no line is read again");
    drop(d);
}

/// The probe: a 1 MB state disk and a storm of 20,000 offenders. The store soon
/// refuses, yet every offender reaches the kernel; `ctl banned` shows only what is
/// saved; once the disk has room the retry saves them all, and a restart starts with
/// every one, from a store that is not damaged.
#[test]
fn a_1_mb_state_disk_full_in_a_storm_keeps_every_offender_in_the_kernel() {
    const OFFENDERS: u32 = 20_000;
    let lab = Lab::new();
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"gfull\"", BAN_AT_FIRST);
    let state = cfg.path().join("state");
    let disk = PrivateDisk::new(
        &state,
        &format!("mount -t tmpfs -o size=1m tmpfs '{}'", state.display()),
    );
    let mut d = disk.start_in_netns(cfg.path(), &lab.server);
    let auth = cfg.path().join("auth.log");
    storm(
        &auth,
        sshd_lines(0..OFFENDERS),
        2_000,
        Duration::from_millis(10),
    );
    wait_for(
        Duration::from_secs(90),
        "every offender in the kernel",
        || lab.elements("gfull", "sshd-v4").len() == OFFENDERS as usize,
    );
    let log = d.output();
    assert!(
        log.contains("the store refused the bans"),
        "the disk filled up"
    );
    assert!(
        log.to_lowercase().contains("no space left"),
        "the cause is named"
    );
    let shown = ctl_count(cfg.path(), "banned");
    assert!(
        shown < OFFENDERS as usize,
        "ctl shows only saved bans: {shown}"
    );
    assert_answers(cfg.path());
    // Room again: the retry saves every ban, and they are shown.
    let grown = disk.run(&format!("mount -o remount,size=64m '{}'", state.display()));
    assert!(grown.status.success(), "{}", text(&grown.stderr));
    wait_for(Duration::from_secs(90), "every ban saved and shown", || {
        ctl_count(cfg.path(), "banned") == OFFENDERS as usize
    });
    let replaced = d.output().contains("damaged and replaced");
    eprintln!("the store was damaged by the full disk and replaced: {replaced}");
    d.stop();
    let d = disk.start_in_netns(cfg.path(), &lab.server);
    assert_eq!(ctl_count(cfg.path(), "banned"), OFFENDERS as usize);
    assert_eq!(lab.elements("gfull", "sshd-v4").len(), OFFENDERS as usize);
    assert!(!d.output().contains("damaged"), "{}", d.output());
}

#[test]
fn a_state_disk_turned_read_only_is_reported_and_caught_up_after_a_restart() {
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    let state = cfg.path().join("state");
    let image = cfg.path().join("state.img");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "truncate -s 64M '{0}' && mkfs.ext4 -q '{0}'",
            image.display()
        ))
        .status()
        .expect("mkfs");
    assert!(made.success(), "mkfs.ext4");
    let mount = format!(
        "mount -o loop,errors=remount-ro '{}' '{}'",
        image.display(),
        state.display()
    );
    let disk = PrivateDisk::new(&state, &mount);
    let mut d = disk.start(cfg.path());
    let auth = cfg.path().join("auth.log");
    storm(&auth, sshd_lines(0..50), 10, Duration::from_millis(10));
    wait_for(Duration::from_secs(10), "the first 50 bans", || {
        ctl_count(cfg.path(), "banned") == 50
    });
    // An ext4 error: the kernel turns the file system read-only under the daemon.
    let broke = disk.run(&format!(
        "echo 1 > /sys/fs/ext4/$(basename $(findmnt -no SOURCE '{}'))/trigger_fs_error",
        state.display()
    ));
    assert!(broke.status.success(), "{}", text(&broke.stderr));
    storm(&auth, sshd_lines(50..200), 20, Duration::from_millis(20));
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        d.output().contains("the store refused the bans")
    });
    assert_eq!(ctl_count(cfg.path(), "banned"), 50, "bans in force stay");
    assert!(
        d.output().contains("the file system is read-only"),
        "the cause is named"
    );
    assert_answers(cfg.path());
    wait_for(Duration::from_secs(10), "a retry", || {
        d.output()
            .contains("the store still refuses the bans; retrying later")
    });
    assert_answers(cfg.path());
    d.stop();
    // Still read-only: the daemon refuses to start and says why.
    let refused = gaoler_in(&disk, cfg.path());
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("the file system is read-only"), "{err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
    // Repaired and mounted again: the restart reads the refused lines again.
    let fixed = disk.run(&format!(
        "umount '{1}' && e2fsck -fy '{0}' >/dev/null; {2}",
        image.display(),
        state.display(),
        mount
    ));
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
    let _d = disk.start(cfg.path());
    wait_for(Duration::from_secs(20), "all 200 bans", || {
        ctl_count(cfg.path(), "banned") == 200
    });
}

/// `gaoler run` in the disk's namespace, expected to exit at once.
fn gaoler_in(disk: &PrivateDisk, cfg: &Path) -> std::process::Output {
    let enter = disk.enter();
    Command::new(&enter[0])
        .args(&enter[1..])
        .arg(bin())
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

/// The probe: one flipped bit in sled's file, or a block of random bytes, used to
/// give a clean start with part of the bans, or none, and no word; one flip made
/// sled panic (exit 101, a crash loop under systemd). Now each start is clean, says
/// when bans were lost, and has every ban: the store's own, and the rest rebuilt
/// from the kernel's table (`on_stop = "keep"`).
#[test]
fn a_flipped_bit_or_random_bytes_in_the_store_lose_no_ban_and_are_reported() {
    const BANS: u32 = 2_000;
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gflip\"\non_stop = \"keep\"",
        BAN_AT_FIRST,
    );
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    storm(
        &cfg.path().join("auth.log"),
        sshd_lines(0..BANS),
        500,
        Duration::from_millis(10),
    );
    wait_for(Duration::from_secs(30), "the bans", || {
        ctl_count(cfg.path(), "banned") == BANS as usize
    });
    d.stop();
    let state = cfg.path().join("state");
    let pristine = cfg.path().join("pristine");
    copy_dir(&state, &pristine);
    let file = state.join("db").join("db");
    let size = std::fs::metadata(&file).expect("sled's file").len();
    let mut reported = 0;
    // Flips spread over the file, and a block of random bytes in its middle.
    let damages: Vec<(u64, Vec<u8>)> = (1..=9)
        .map(|i| (size * i / 10, vec![1u8 << (i % 8)]))
        .chain([(
            size / 2,
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        )])
        .collect();
    for (at, mask) in &damages {
        std::fs::remove_dir_all(&state).expect("rm state");
        copy_dir(&pristine, &state);
        let mut bytes = std::fs::read(&file).expect("read");
        for (i, m) in mask.iter().enumerate() {
            if let Some(b) = bytes.get_mut(*at as usize + i) {
                *b ^= m;
            }
        }
        std::fs::write(&file, &bytes).expect("write");
        let mut d = Daemon::start(cfg.path(), Some(&lab.server));
        let shown = ctl_count(cfg.path(), "banned");
        let log = d.output();
        assert_eq!(
            shown, BANS as usize,
            "damage at {at} of {size}: {shown} bans:\n{log}"
        );
        assert_eq!(lab.elements("gflip", "sshd-v4").len(), BANS as usize);
        if log.contains("the state database was damaged") {
            reported += 1;
            assert!(log.contains("recovered_from_kernel"), "{log}");
        }
        d.stop();
        // Healed: the next start finds nothing to report.
        let mut again = Daemon::start(cfg.path(), Some(&lab.server));
        assert_eq!(ctl_count(cfg.path(), "banned"), BANS as usize);
        assert!(
            !again.output().contains("the state database was damaged"),
            "{}",
            again.output()
        );
        again.stop();
    }
    eprintln!(
        "{reported} of {} damages were found and repaired",
        damages.len()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a");
}
