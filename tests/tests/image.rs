//! Root integration tests of the OCI image (`make image`): the image
//! scripts/build-image.sh makes from this build runs under podman with the
//! host's network and PID namespaces, the mounts deploy/kubernetes gives it
//! and, instead of --privileged, only the capabilities these tests show it
//! needs. It reports full support, tunes the host's namespace and other
//! namespaces (one pinned in /run/netns, one held only by a process of
//! another user, another container's, which the log names), answers
//! `bpftune -q status` and /metrics on the host through the shared run
//! directory, and rolls every change back on `podman stop` (-R).
//! Each capability of the minimal set is taken away in turn to show what
//! breaks. The Kubernetes manifests validate against the API schemas and
//! carry the same mounts and probe.
//!
//! podman runs with runc (crun refuses the hybrid cgroup layout of these
//! machines) and a containers.conf of the test's own (CONTAINERS_CONF) with
//! `default_ulimits = []` (raising rlimits needs CAP_SYS_RESOURCE here); the
//! host's podman configuration is never touched. Every container and image
//! is removed and every sysctl restored, also when a test fails.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bpftune_tests::{
    Netns, PluginDir, STATE_DIR, SysctlGuard, TEST_RUN_DIR, Veth, build_dir, bulk_transfer, daemon_binary, skip,
    sysctl_read, test_lock, values,
};

const RMEM: &str = "net.ipv4.tcp_rmem";
const SMALL_RMEM: &str = "4096 131072 131072";
const INCREASE: &str = "Scenario 'need to increase TCP buffer size(s)' occurred for tunable 'net.ipv4.tcp_rmem'";
const ROLLBACK: &str = "Rolling back sysctl values for 'net.ipv4.tcp_rmem'";
/// What the container is given instead of --privileged (README "Running in
/// a container and on Kubernetes"): CAP_SYS_ADMIN to load BPF (podman's
/// seccomp profile allows bpf(2) only with it; it also covers what CAP_BPF,
/// CAP_PERFMON and CAP_NET_ADMIN allow) and to enter namespaces, and
/// CAP_SYS_PTRACE to find namespaces through other users' processes.
const MINIMAL_CAPS: &[&str] = &["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"];
/// The DaemonSet's `--metrics-listen` address (Prometheus annotations).
const METRICS_ADDR: &str = "127.0.0.1:9555";
/// Where the container sees the host's cgroup v2 hierarchy (given with -c),
/// as in deploy/kubernetes/daemonset.yaml.
const CGROUP_IN_CONTAINER: &str = "/host/cgroup2";
/// Host directories shared with the container at the same path.
const SHARED_DIRS: &[&str] = &["/run/bpftune", STATE_DIR, "/run/netns"];
const MAX_IMAGE_BYTES: u64 = 40 << 20;
/// Capability numbers (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// podman with the test's own containers.conf.
struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// None (and a SKIP line) where podman or runc is not installed.
    fn new(test: &str) -> Option<Self> {
        for tool in ["podman", "runc"] {
            if !have(tool) {
                skip(test, &format!("{tool} not installed (make test-image installs podman and runc)"));
                return None;
            }
        }
        let _ = fs::DirBuilder::new().recursive(true).mode(0o755).create(TEST_RUN_DIR);
        let conf = Path::new(TEST_RUN_DIR).join(format!("containers-{}.conf", std::process::id()));
        fs::write(
            &conf,
            "[containers]\n# No rlimits: raising them needs CAP_SYS_RESOURCE, which these machines lack.\n\
             default_ulimits = []\n\n[engine]\n# crun refuses the hybrid cgroup layout.\nruntime = \"runc\"\n\
             # systemd is not PID 1 here.\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("write containers.conf");
        Some(Self { conf })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.conf);
    }
}

/// The image built from this build by scripts/build-image.sh under a name
/// of the test's own; removed on drop.
struct Image<'a> {
    podman: &'a Podman,
    name: String,
    out: PathBuf,
    build_log: String,
}

/// The tuners `make image` ships: every crate under tuners/.
fn production_tuners() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo().join("tuners"))
        .expect("tuners/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl<'a> Image<'a> {
    fn build(podman: &'a Podman) -> Self {
        let tuners = production_tuners();
        let refs: Vec<&str> = tuners.iter().map(String::as_str).collect();
        let stage = PluginDir::with(&refs);
        let tag = format!("{}-{}", std::process::id(), stage.path.file_name().and_then(|n| n.to_str()).unwrap_or("x"));
        let name = format!("localhost/bpftune-test-{tag}");
        let out = Path::new(TEST_RUN_DIR).join(format!("image-{tag}"));
        let mut image = Self { podman, name: format!("{name}:test"), out, build_log: String::new() };
        let run = Command::new(repo().join("scripts/build-image.sh"))
            .env("CONTAINERS_CONF", &podman.conf)
            .arg("--release-dir")
            .arg(build_dir())
            .arg("--stage-dir")
            .arg(&stage.path)
            .arg("--out")
            .arg(&image.out)
            .args(["--image", &name, "--version", "test", "--no-save"])
            .output()
            .expect("run scripts/build-image.sh");
        assert!(run.status.success(), "build-image.sh failed: {}", text(&run));
        image.build_log = text(&run);
        image
    }

    fn inspect(&self, format: &str) -> String {
        self.podman.ok(&["image", "inspect", "--format", format, &self.name])
    }
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let latest = format!("{}:latest", self.name.trim_end_matches(":test"));
        let _ = self.podman.run(&["rmi", "--force", &self.name, &latest]);
        let _ = fs::remove_dir_all(&self.out);
    }
}

/// The host's cgroup v2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified
/// with the hybrid layout).
fn host_cgroup2() -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2" && f[1].starts_with("/sys/fs/cgroup"))
        .map(|f| f[1].to_string())
        .expect("no cgroup2 mount under /sys/fs/cgroup")
}

/// `--cap-drop all --cap-add …`, the mounts and namespaces of
/// deploy/kubernetes, a read-only root as there.
fn run_args(name: &str, caps: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--runtime", "runc", "--name", name, "--network", "host", "--pid", "host"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--cap-drop".into(), "all".into()]);
    if !caps.is_empty() {
        a.extend(["--cap-add".into(), caps.join(",")]);
    }
    // /proc/sys is read-only in a container unless unmasked.
    a.extend(["--security-opt".into(), "unmask=/proc/sys".into()]);
    a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    for dir in SHARED_DIRS {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).expect("create shared dir");
        let opts = if *dir == "/run/netns" { ":ro,rslave" } else { "" };
        a.extend(["--volume".into(), format!("{dir}:{dir}{opts}")]);
    }
    a.extend(["--volume".into(), format!("{}:{CGROUP_IN_CONTAINER}", host_cgroup2())]);
    a
}

/// A container of the image, removed (forcibly) on drop.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl<'a> Container<'a> {
    /// `podman run -d` with `caps`; the daemon gets `-c <cgroup>` and `args`.
    fn start(podman: &'a Podman, image: &Image<'_>, caps: &[&str], args: &[&str]) -> Self {
        let name = format!("bpftune-test-{}-{}", std::process::id(), caps.len());
        let _ = podman.run(&["rm", "--force", "--time", "0", &name]);
        let mut a = run_args(&name, caps);
        a.insert(1, "--detach".into());
        a.push(image.name.clone());
        a.extend(["-c".into(), CGROUP_IN_CONTAINER.into()]);
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let c = Self { podman, name };
        let out = podman.run(&refs);
        assert!(out.status.success(), "podman {refs:?}: {}", text(&out));
        c
    }

    fn logs(&self) -> String {
        text(&self.podman.run(&["logs", &self.name]))
    }

    fn state(&self, field: &str) -> String {
        self.podman.ok(&["inspect", "--format", &format!("{{{{.State.{field}}}}}"), &self.name])
    }

    fn running(&self) -> bool {
        self.state("Running") == "true"
    }

    /// The daemon's pid in the host's PID namespace.
    fn pid(&self) -> u32 {
        self.state("Pid").parse().expect("pid")
    }

    /// Wait until `bpftune -q status` run on the host answers through the
    /// shared run directory; returns its output.
    fn wait_ready(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new(daemon_binary()).args(["-q", "status"]).output().expect("bpftune -q status");
            if out.status.success() {
                return text(&out);
            }
            assert!(self.running(), "the container exited:\n{}", self.logs());
            assert!(Instant::now() < deadline, "no answer to -q status: {}\n{}", text(&out), self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `podman stop` (SIGTERM, up to 30 s) and the exit code and log.
    fn stop(&self) -> (String, String) {
        self.podman.ok(&["stop", "--time", "30", &self.name]);
        (self.state("ExitCode"), self.logs())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// A network namespace held only by a process of another user (nobody),
/// not pinned in /run/netns, as a rootless container's or a non-root pod's:
/// the daemon finds it only through /proc/<pid>/ns/net. tcp_rmem is set
/// small in it before the daemon starts. Killed (and so gone) on drop.
struct UserNetns {
    child: Child,
}

impl UserNetns {
    fn new() -> Self {
        let script = format!(
            "ip link set lo up && sysctl -qw {RMEM}='{SMALL_RMEM}' && \
             exec setpriv --reuid 65534 --regid 65534 --clear-groups sleep 600"
        );
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net");
        let ns = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(format!("/proc/{}/status", ns.pid()))
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")))
        {
            assert!(Instant::now() < deadline, "the namespace holder did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ns
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rmem(&self) -> String {
        netns_rmem(self.pid())
    }

    /// A loopback bulk transfer in the namespace, client and server both
    /// running as nobody.
    fn transfer(&self, secs: u32) {
        netns_transfer(self.pid(), true, secs);
    }
}

/// `nsenter` into the network namespace of `pid` (as nobody if asked).
fn nsenter(pid: u32, as_nobody: bool) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["--target", &pid.to_string(), "--net"]);
    if as_nobody {
        c.args(["--setuid", "65534", "--setgid", "65534"]);
    }
    c
}

/// tcp_rmem in the network namespace of `pid`.
fn netns_rmem(pid: u32) -> String {
    let out = nsenter(pid, false).args(["sysctl", "-n", RMEM]).output().expect("nsenter sysctl");
    String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A loopback bulk transfer (iperf3, `secs` seconds) in the network
/// namespace of `pid`, client and server run as nobody if asked.
fn netns_transfer(pid: u32, as_nobody: bool, secs: u32) {
    let port = (20000 + std::process::id() % 20000).to_string();
    let mut server = nsenter(pid, as_nobody)
        .args(["iperf3", "--server", "--one-off", "--bind", "127.0.0.1", "--port", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let out = nsenter(pid, as_nobody)
        .args(["iperf3", "--client", "127.0.0.1", "--port", &port, "--time", &secs.to_string()])
        .output()
        .expect("iperf3 client");
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "iperf3 in the namespace of pid {pid}: {}", text(&out));
}

/// Another container on the host, with a network namespace of its own
/// (`--network none`) and tcp_rmem set small in it, running `sleep` from a
/// root file system of the host's `sleep` and the libraries it needs. The
/// container and its root are removed on drop.
struct Workload<'a> {
    podman: &'a Podman,
    name: String,
    root: PathBuf,
}

impl<'a> Workload<'a> {
    fn start(podman: &'a Podman) -> Self {
        let name = format!("bpftune-test-{}-workload", std::process::id());
        let root = Path::new(TEST_RUN_DIR).join(&name);
        let w = Self { podman, name, root };
        let _ = fs::remove_dir_all(&w.root);
        let sleep = fs::canonicalize("/bin/sleep").expect("sleep");
        let ldd = Command::new("ldd").arg(&sleep).output().expect("ldd");
        let mut files = vec![sleep];
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line.split("=>").last().unwrap_or(line).split_whitespace().next().unwrap_or("");
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
        for f in &files {
            let dst = w.root.join(f.strip_prefix("/").expect("absolute"));
            fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            fs::copy(f, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        }
        let root = w.root.to_str().expect("utf8");
        let _ = podman.run(&["rm", "--force", "--time", "0", &w.name]);
        let bin = format!("/{}", files[0].strip_prefix("/").expect("absolute").display());
        podman.ok(&[
            "run",
            "--runtime",
            "runc",
            "--detach",
            "--name",
            &w.name,
            "--network",
            "none",
            "--rootfs",
            root,
            &bin,
            "600",
        ]);
        let pid = w.pid();
        let set =
            nsenter(pid, false).args(["sysctl", "-qw", &format!("{RMEM}={SMALL_RMEM}")]).output().expect("sysctl");
        assert!(set.status.success(), "{}", text(&set));
        assert!(nsenter(pid, false).args(["ip", "link", "set", "lo", "up"]).status().is_ok_and(|s| s.success()));
        w
    }

    fn pid(&self) -> u32 {
        self.podman.ok(&["inspect", "--format", "{{.State.Pid}}", &self.name]).parse().expect("pid")
    }

    fn id(&self) -> String {
        self.podman.ok(&["inspect", "--format", "{{.Id}}", &self.name])
    }
}

impl Drop for Workload<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "--force", "--time", "0", &self.name]);
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Drop for UserNetns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bulk transfers until `done()` or `limit` passes.
fn transfer_until(tx: Option<&Netns>, rx: Option<&Netns>, veth: &Veth, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !done() {
        assert!(bulk_transfer(tx, rx, veth.b_addr, 2 << 30, None, Duration::from_secs(3)) > 0, "no data moved");
    }
}

fn max_of(v: &str) -> i64 {
    values(v).get(2).copied().unwrap_or(0)
}

/// Whether this daemon has --metrics-listen.
fn has_metrics_listen() -> bool {
    Command::new(daemon_binary()).arg("-h").output().is_ok_and(|o| text(&o).contains("--metrics-listen"))
}

/// GET /metrics from `addr`, as a node-local scraper would.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send request");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// A `Cap*:` mask of a host pid.
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16).expect("hex")
}

#[test]
fn image_is_small_labelled_and_supports_this_kernel_fully() {
    bpftune_tests::require_root!();
    let test = "image_is_small_labelled_and_supports_this_kernel_fully";
    let _l = test_lock();
    let Some(podman) = Podman::new(test) else { return };
    let image = Image::build(&podman);

    // Exactly the daemon, the tuners and the libraries ldd named.
    let log = &image.build_log;
    assert!(log.contains("  /usr/sbin/bpftune\n"), "{log}");
    for t in production_tuners() {
        assert!(log.contains(&format!("  /usr/lib64/bpftune/{t}_tuner.so\n")), "{t}: {log}");
    }
    for lib in ["libelf.so.1", "libz.so.1", "libc.so.6"] {
        assert!(log.lines().any(|l| l.starts_with("  /") && l.ends_with(lib)), "{lib}: {log}");
    }
    let size: u64 = image.inspect("{{.Size}}").parse().expect("size");
    eprintln!("image size: {size} bytes ({} MiB)", size >> 20);
    assert!(size < MAX_IMAGE_BYTES, "image is {size} bytes");
    assert_eq!(image.inspect("{{json .Config.Entrypoint}}"), r#"["/usr/sbin/bpftune","-s"]"#);
    for label in ["title", "version", "revision", "created", "licenses", "source", "description"] {
        let v = image.inspect(&format!("{{{{index .Config.Labels \"org.opencontainers.image.{label}\"}}}}"));
        assert!(!v.is_empty() && v != "<no value>", "label {label} missing");
    }

    // `bpftune -S` inside, with the minimal capabilities and no --privileged.
    let mut args = run_args(&format!("bpftune-test-{}-support", std::process::id()), MINIMAL_CAPS);
    args.insert(1, "--rm".into());
    args.push(image.name.clone());
    args.push("-S".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = podman.run(&refs);
    let said = text(&out);
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("bpftune: bpftune works fully"), "{said}");
    assert!(said.contains("tcp_buffer: works fully"), "{said}");
}

#[test]
fn container_tunes_host_and_namespaces_answers_queries_and_rolls_back_on_stop() {
    bpftune_tests::require_root!();
    let test = "container_tunes_host_and_namespaces_answers_queries_and_rolls_back_on_stop";
    let _l = test_lock();
    let Some(podman) = Podman::new(test) else { return };
    assert!(have("iperf3") && have("nsenter") && have("setpriv"), "needs iperf3 and util-linux (make test-deps)");
    // Set before the daemon starts (a write while it runs is an override);
    // restored after everything else is gone.
    let _rmem = SysctlGuard::set(RMEM, SMALL_RMEM);
    let _moderate = SysctlGuard::global("net.ipv4.tcp_moderate_rcvbuf");
    let tx = Netns::new("imgtx");
    let rx = Netns::new("imgrx");
    let to_rx = Veth::connect(Some(&tx), Some(&rx));
    let to_host = Veth::connect(Some(&tx), None);
    rx.set_sysctl(RMEM, SMALL_RMEM);
    let user = UserNetns::new();
    assert_eq!(user.rmem(), SMALL_RMEM);
    let image = Image::build(&podman);
    let work = Workload::start(&podman);
    let metrics = has_metrics_listen();
    let mut args = vec!["-R"];
    if metrics {
        args.extend(["--metrics-listen", METRICS_ADDR]);
    }
    let ctr = Container::start(&podman, &image, MINIMAL_CAPS, &args);
    let status = ctr.wait_ready(Duration::from_secs(30));
    assert!(status.contains("tcp_buffer") && status.contains(RMEM), "-q status from the host:\n{status}");

    // Least privilege inside the container too: the daemon keeps
    // CAP_SYS_ADMIN and CAP_SYS_PTRACE permitted, nothing effective.
    let pid = ctr.pid();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cap_mask(pid, "CapEff:"), 0, "{}", ctr.logs());
    assert_eq!(cap_mask(pid, "CapPrm:"), (1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE), "{}", ctr.logs());

    // The host's namespace: a receiver on the host.
    let global = format!("{INCREASE} in global ns");
    transfer_until(Some(&tx), None, &to_host, Duration::from_secs(20), || ctr.logs().contains(&global));
    // A namespace pinned in /run/netns.
    let from = format!("change {RMEM}(min default max) from ({SMALL_RMEM})");
    transfer_until(Some(&tx), Some(&rx), &to_rx, Duration::from_secs(20), || max_of(&rx.sysctl(RMEM)) > 131072);
    // A namespace only a process of another user is in.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && max_of(&user.rmem()) <= 131072 {
        user.transfer(4);
    }
    // Another container's namespace: the change is logged with the cookie
    // and, once, which container that namespace belongs to.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && max_of(&netns_rmem(work.pid())) <= 131072 {
        netns_transfer(work.pid(), false, 4);
    }
    let work_now = netns_rmem(work.pid());
    assert!(max_of(&work_now) > 131072, "other container's namespace {work_now}\n{}", ctr.logs());
    let log = ctr.logs();
    let id = work.id();
    let line = log
        .lines()
        .find(|l| l.contains(" is that of pid ") && l.contains(&format!("container {id}")))
        .unwrap_or_else(|| panic!("no line names container {id}\n{log}"));
    eprintln!("{line}");
    let cookie = line.split("netns (cookie ").nth(1).and_then(|r| r.split(')').next()).expect("cookie");
    assert!(
        log.lines().any(|l| l.contains(&from) && l.ends_with(&format!("(netns cookie {cookie})"))),
        "no change logged for netns cookie {cookie}\n{log}"
    );
    let (host_now, rx_now, user_now) = (sysctl_read(None, RMEM), rx.sysctl(RMEM), user.rmem());
    eprintln!("tcp_rmem while running: host {host_now}, /run/netns namespace {rx_now}, user's namespace {user_now}");
    assert!(log.contains(&global) && max_of(&host_now) > 131072, "host {host_now}\n{log}");
    assert!(log.contains(&format!("{INCREASE} in non-global ns")) && log.contains(&from), "{log}");
    assert!(max_of(&rx_now) > 131072, "/run/netns namespace {rx_now}\n{log}");
    assert!(max_of(&user_now) > 131072, "user's namespace {user_now}\n{log}");

    let status = Command::new(daemon_binary()).args(["-q", "status"]).output().expect("-q status");
    assert!(status.status.success() && text(&status).contains(RMEM), "{}", text(&status));
    // The Prometheus scrape target of deploy/kubernetes, from the host.
    if metrics {
        let body = scrape(METRICS_ADDR);
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("bpftune_build_info"), "{body}");
    }

    // podman stop: SIGTERM, and -R puts every value back.
    let (code, log) = ctr.stop();
    assert_eq!(code, "0", "{log}");
    assert!(log.contains(ROLLBACK), "{log}");
    assert!(log.contains("# Summary: scenario 'need to increase TCP buffer size(s)' occurred"), "{log}");
    assert_eq!(sysctl_read(None, RMEM), SMALL_RMEM, "host not rolled back\n{log}");
    assert_eq!(rx.sysctl(RMEM), SMALL_RMEM, "/run/netns namespace not rolled back\n{log}");
    assert_eq!(user.rmem(), SMALL_RMEM, "user's namespace not rolled back\n{log}");
    assert_eq!(netns_rmem(work.pid()), SMALL_RMEM, "other container's namespace not rolled back\n{log}");
    let after = Command::new(daemon_binary()).args(["-q", "status"]).output().expect("-q status");
    assert!(!after.status.success(), "a daemon still answers after podman stop");
}

#[test]
fn without_cap_sys_admin_bpf_is_refused() {
    bpftune_tests::require_root!();
    let test = "without_cap_sys_admin_bpf_is_refused";
    let _l = test_lock();
    let Some(podman) = Podman::new(test) else { return };
    let image = Image::build(&podman);
    // Everything the daemon's runtime set names except CAP_SYS_ADMIN:
    // podman's seccomp profile allows bpf(2) only with CAP_SYS_ADMIN.
    let caps = ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"];
    let mut args = run_args(&format!("bpftune-test-{}-nosysadmin", std::process::id()), &caps);
    args.insert(1, "--rm".into());
    args.push(image.name.clone());
    args.extend(["-c".into(), CGROUP_IN_CONTAINER.into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = podman.run(&refs);
    let said = text(&out);
    eprintln!("{said}");
    assert!(!out.status.success(), "the daemon ran without CAP_SYS_ADMIN:\n{said}");
    assert!(said.contains("bpftune is not supported"), "{said}");
}

#[test]
fn without_cap_sys_ptrace_namespaces_of_other_users_are_not_tuned() {
    bpftune_tests::require_root!();
    let test = "without_cap_sys_ptrace_namespaces_of_other_users_are_not_tuned";
    let _l = test_lock();
    let Some(podman) = Podman::new(test) else { return };
    assert!(have("iperf3") && have("nsenter") && have("setpriv"), "needs iperf3 and util-linux (make test-deps)");
    let tx = Netns::new("imgptx");
    let rx = Netns::new("imgprx");
    let to_rx = Veth::connect(Some(&tx), Some(&rx));
    rx.set_sysctl(RMEM, SMALL_RMEM);
    let user = UserNetns::new();
    let image = Image::build(&podman);
    let ctr = Container::start(&podman, &image, &["CAP_SYS_ADMIN"], &["-R"]);
    ctr.wait_ready(Duration::from_secs(30));

    // The same traffic as with the minimal set, for as long as it took there.
    for _ in 0..3 {
        user.transfer(3);
    }
    assert_eq!(user.rmem(), SMALL_RMEM, "tuned without CAP_SYS_PTRACE?\n{}", ctr.logs());
    // Control: a namespace pinned in /run/netns is still found and tuned.
    transfer_until(Some(&tx), Some(&rx), &to_rx, Duration::from_secs(20), || max_of(&rx.sysctl(RMEM)) > 131072);
    assert!(max_of(&rx.sysctl(RMEM)) > 131072, "{}", ctr.logs());
    let (code, log) = ctr.stop();
    assert_eq!(code, "0", "{log}");
    assert_eq!(rx.sysctl(RMEM), SMALL_RMEM, "{log}");
}

#[test]
fn kubernetes_manifests_validate_and_match_the_tested_container() {
    bpftune_tests::require_root!();
    let out = Command::new("python3").arg(repo().join("scripts/validate-k8s.py")).output().expect("python3");
    let said = text(&out);
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    let fact = |name: &str| -> String {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("fact: {name} ")))
            .unwrap_or_else(|| panic!("no fact {name}: {said}"))
            .to_string()
    };
    // The DaemonSet mounts what the podman tests mount, at the same paths.
    let mut in_pod: Vec<String> =
        fact("mounts").split_whitespace().filter_map(|m| m.split_once(':').map(|(_, d)| d.to_string())).collect();
    in_pod.sort();
    let mut tested: Vec<String> = SHARED_DIRS.iter().map(|d| d.to_string()).collect();
    tested.push(CGROUP_IN_CONTAINER.to_string());
    tested.sort();
    assert_eq!(in_pod, tested);
    assert_eq!(fact("cgroup"), CGROUP_IN_CONTAINER);
    assert_eq!(fact("probe"), "/usr/sbin/bpftune -q status");
    assert_eq!(fact("args"), format!("-c {CGROUP_IN_CONTAINER} --metrics-listen {METRICS_ADDR}"));
    assert!(has_metrics_listen(), "the DaemonSet passes --metrics-listen, which this daemon lacks");
    assert!(said.contains("control: a misspelt field (hostNetwrok) is rejected"), "{said}");
}
