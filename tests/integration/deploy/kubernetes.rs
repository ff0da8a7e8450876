//! `deploy/kubernetes/` (a kustomize base) held to the binary: the container's args with the
//! ConfigMap's rustcorn.toml start rustcorn and answer every probe; the grace period covers the
//! preStop sleep plus the graceful timeout; probe, Service and scrape ports are the config's binds.

use super::{compile, has_admin_bind, read_deploy_file, skip};
use crate::support::*;
use saphyr::{LoadableYamlNode, YamlOwned as Yaml};

fn manifest(name: &str) -> Yaml {
    let text = read_deploy_file(&format!("kubernetes/{name}"));
    let mut docs = Yaml::load_from_str(&text).unwrap_or_else(|e| panic!("kubernetes/{name}: {e}"));
    assert_eq!(docs.len(), 1, "kubernetes/{name} holds one object");
    docs.remove(0)
}

/// The node at `path` (mapping keys), if every key is there.
fn try_at<'a>(yaml: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(yaml, |node, key| node.as_mapping_get(key))
}

fn at<'a>(yaml: &'a Yaml, path: &[&str]) -> &'a Yaml {
    try_at(yaml, path).unwrap_or_else(|| panic!("no {} in the manifest", path.join(".")))
}

fn text(yaml: &Yaml) -> &str {
    yaml.as_str().unwrap_or_else(|| panic!("expected a string, found {yaml:?}"))
}

fn number(yaml: &Yaml) -> i64 {
    yaml.as_integer().unwrap_or_else(|| panic!("expected an integer, found {yaml:?}"))
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map(Vec::as_slice).unwrap_or_else(|| panic!("expected a list, found {yaml:?}"))
}

/// The Deployment's (only) container.
fn container(deployment: &Yaml) -> &Yaml {
    let containers = list(&deployment["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The file the ConfigMap mounted for the container is generated from (kustomization.yaml).
fn config_file_name() -> String {
    let kustomization = manifest("kustomization.yaml");
    let deployment = manifest("deployment.yaml");
    let volume_name = list(&deployment["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| try_at(v, &["configMap"]).is_some())
        .map(|v| text(&v["configMap"]["name"]).to_string())
        .expect("a ConfigMap volume");
    let generator = list(&kustomization["configMapGenerator"])
        .iter()
        .find(|g| text(&g["name"]) == volume_name)
        .unwrap_or_else(|| panic!("kustomization.yaml generates ConfigMap {volume_name}"));
    text(&list(&generator["files"])[0]).to_string()
}

fn config() -> toml::Table {
    let name = config_file_name();
    read_deploy_file(&format!("kubernetes/{name}")).parse().expect("rustcorn.toml parses")
}

/// The port of a `HOST:PORT` bind.
fn port_of(bind: &str) -> i64 {
    bind.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {bind}"))
}

/// containerPort of the port named `name`.
fn container_port(container: &Yaml, name: &str) -> i64 {
    list(&container["ports"])
        .iter()
        .find(|p| text(&p["name"]) == name)
        .map(|p| number(&p["containerPort"]))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// (probe kind, path, port name) of every probe.
fn probes(container: &Yaml) -> Vec<(&'static str, String, String)> {
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .map(|kind| {
            let get = try_at(container, &[kind, "httpGet"]).unwrap_or_else(|| panic!("{kind} is an httpGet probe"));
            (kind, text(&get["path"]).to_string(), text(&get["port"]).to_string())
        })
        .collect()
}

#[test]
fn kubernetes_grace_period_covers_prestop_and_graceful_timeout() {
    let deployment = manifest("deployment.yaml");
    let grace = number(&deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]);
    let pre_stop = number(at(container(&deployment), &["lifecycle", "preStop", "sleep", "seconds"]));
    let graceful = config().get("graceful-timeout").and_then(|v| v.as_integer()).unwrap_or(30);
    let margin = 5;
    assert!(
        grace >= pre_stop + graceful + margin,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + graceful-timeout {graceful} + margin {margin}"
    );
}

#[test]
fn kubernetes_probe_service_and_scrape_ports_are_the_config_binds() {
    let deployment = manifest("deployment.yaml");
    let container = container(&deployment);
    let config = config();
    let binds: Vec<&str> = config["bind"].as_array().expect("bind list").iter().filter_map(|b| b.as_str()).collect();
    assert_eq!(binds.len(), 1, "one app bind");
    let admin_bind = config["admin-bind"].as_str().expect("admin-bind in rustcorn.toml");
    let http = container_port(container, "http");
    let admin = container_port(container, "admin");
    assert_eq!(http, port_of(binds[0]), "containerPort http = bind");
    assert_eq!(admin, port_of(admin_bind), "containerPort admin = admin-bind");
    assert!(binds[0].starts_with("0.0.0.0:") && admin_bind.starts_with("0.0.0.0:"), "reachable from the pod network");
    for (kind, _, port) in probes(container) {
        assert_eq!(port, "admin", "{kind} probes the admin port, never the app's");
    }
    let service = manifest("service.yaml");
    for port in list(&service["spec"]["ports"]) {
        assert_eq!(text(&port["targetPort"]), "http", "the Service sends traffic to the app port");
    }
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(text(&annotations["prometheus.io/port"]).parse::<i64>().unwrap(), admin);
    let pod_monitor = manifest("podmonitor.yaml");
    assert_eq!(text(&list(&pod_monitor["spec"]["podMetricsEndpoints"])[0]["port"]), "admin");
    // The container reads the mounted ConfigMap.
    let args: Vec<&str> = list(&container["args"]).iter().map(text).collect();
    let config_path = args.iter().position(|a| *a == "--config").map(|i| args[i + 1]).expect("--config in args");
    let mount =
        list(&container["volumeMounts"]).iter().map(|m| text(&m["mountPath"])).find(|m| config_path.starts_with(m));
    assert_eq!(config_path, format!("{}/{}", mount.expect("--config is on a mounted volume"), config_file_name()));
}

#[test]
fn kubernetes_pod_is_locked_down_and_its_worker_count_follows_the_cpu_limit() {
    let deployment = manifest("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = container(&deployment);
    let security = &container["securityContext"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(text(&pod["securityContext"]["seccompProfile"]["type"]), "RuntimeDefault");
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(list(&security["capabilities"]["drop"]).iter().map(text).collect::<Vec<_>>(), ["ALL"]);
    // The image's USER is the uid the pod runs as.
    let dockerfile = read_deploy_file("Dockerfile");
    let user = dockerfile.lines().filter_map(|l| l.strip_prefix("USER ")).last().unwrap();
    assert_eq!(user.split(':').next().unwrap().parse::<i64>().unwrap(), number(&pod["securityContext"]["runAsUser"]));
    // One worker per CPU of the limit: rustcorn reads the cgroup quota when `workers` is unset.
    assert!(try_at(container, &["resources", "limits", "cpu"]).is_some(), "a CPU limit");
    assert!(try_at(container, &["resources", "requests", "memory"]).is_some(), "a memory request");
    assert!(!config().contains_key("workers"), "`workers` unset: the CPU limit decides");
    let hpa = manifest("hpa.yaml");
    assert_eq!(text(&list(&hpa["spec"]["metrics"])[0]["resource"]["name"]), "cpu");
    assert!(number(&manifest("pdb.yaml")["spec"]["minAvailable"]) >= 1);
}

/// Starts rustcorn with exactly the container's args and the ConfigMap's rustcorn.toml. Changed,
/// and only these: `app` points at a `.cwasm` compiled here (the image's /app/app.cwasm), and the
/// binds' 0.0.0.0 ports become loopback ports (the app's chosen by the kernel, the admin one a
/// free port found here).
#[test]
fn kubernetes_container_args_and_configmap_serve_and_answer_every_probe() {
    let test = "kubernetes_container_args_and_configmap_serve_and_answer_every_probe";
    if !has_admin_bind() {
        skip(test, "this rustcorn has no --admin-bind (the admin endpoints of issue 9); the probes cannot be served");
        return;
    }
    let deployment = manifest("deployment.yaml");
    let container = container(&deployment);
    let dir = scratch_dir("k8s");
    let cwasm = dir.path().join("app.cwasm");
    let (ok, output) = compile(&guest("faults"), &cwasm, None);
    assert!(ok, "{output}");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let original = read_deploy_file(&format!("kubernetes/{}", config_file_name()));
    let mut rewritten = 0;
    let lines: Vec<String> = original
        .lines()
        .map(|line| {
            let replacement = match line.split('=').next().unwrap_or_default().trim() {
                "app" => format!("app = {:?}", cwasm.display().to_string()),
                "bind" => "bind = [\"127.0.0.1:0\"]".to_string(),
                "admin-bind" => format!("admin-bind = {admin_addr:?}"),
                _ => return line.to_string(),
            };
            rewritten += 1;
            replacement
        })
        .collect();
    assert_eq!(rewritten, 3, "app, bind and admin-bind rewritten, nothing else");
    let config_path = dir.path().join(config_file_name());
    std::fs::write(&config_path, lines.join("\n")).unwrap();
    let args: Vec<String> = list(&container["args"])
        .iter()
        .map(|a| {
            if text(a).starts_with("/etc/rustcorn/") {
                config_path.display().to_string()
            } else {
                text(a).to_string()
            }
        })
        .collect();
    assert_eq!(args[0], "serve");
    let mut server = ServerCommand::without_app().args(&args[1..]).start();
    for (kind, path, _) in probes(container) {
        let reply = http(&admin_addr, "GET", &path, &[], b"").unwrap_or_else(|e| panic!("{kind} GET {path}: {e}"));
        assert_eq!(reply.status, 200, "{kind} {path}: {}", reply.text());
    }
    let scrape_path =
        text(&deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]).to_string();
    assert_eq!(http(&admin_addr, "GET", &scrape_path, &[], b"").unwrap().status, 200, "{scrape_path}");
    assert_eq!(server.get("/ok").text(), "ok\n");

    // What the kubelet sees after preStop: TERM, readiness fails at once, the request in flight ends.
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || http(&addr, "GET", "/sleep?ms=1500", &[], b""));
    server.log.wait_for(&["sleeping for 1500 ms"], WAIT);
    server.signal(libc::SIGTERM);
    let readiness = probes(container).into_iter().find(|p| p.0 == "readinessProbe").unwrap().1;
    // Polled the way the kubelet does: the probe itself is what is under test here.
    wait_until(
        "the readiness probe fails after TERM",
        WAIT,
        || !matches!(http(&admin_addr, "GET", &readiness, &[], b""), Ok(reply) if reply.status == 200),
    );
    assert!(!slow.is_finished(), "readiness failed while the request was still in flight");
    assert_eq!(slow.join().unwrap().expect("in-flight request").status, 200);
    assert!(server.wait_exit(WAIT).success());
}

/// The `value`s a JSON6902 patch file of a component appends to the container's args.
fn appended_args(component_file: &str) -> Vec<String> {
    let text = read_deploy_file(&format!("components/{component_file}"));
    let docs = Yaml::load_from_str(&text).unwrap_or_else(|e| panic!("components/{component_file}: {e}"));
    list(&docs[0])
        .iter()
        .filter(|op| text_of(op, "path").ends_with("/args/-"))
        .map(|op| text_of(op, "value").to_string())
        .collect()
}

fn text_of<'a>(yaml: &'a Yaml, key: &str) -> &'a str {
    text(at(yaml, &[key]))
}

#[test]
fn kubernetes_redis_component_names_its_service_and_its_args_are_accepted() {
    let args = appended_args("redis/keyvalue-arg.yaml");
    assert_eq!(args.len(), 2, "{args:?}");
    assert_eq!(args[0], "--keyvalue");
    let text = read_deploy_file("components/redis/service.yaml");
    let service = Yaml::load_from_str(&text).unwrap().remove(0);
    let (name, port) = (text_of(at(&service, &["metadata"]), "name"), number(&at(&service, &["spec", "ports"])[0]["port"]));
    assert_eq!(args[1], format!("default=redis://{name}:{port}"), "the URL is the component's Service");
    let secret = appended_args("app-secret/mount.yaml");
    assert_eq!(secret[0], "--config-file");
    let mount = read_deploy_file("components/app-secret/mount.yaml");
    assert!(mount.contains("mountPath: /etc/rustcorn/secrets"), "{mount}");
    assert!(secret[1].starts_with("api-token=/etc/rustcorn/secrets/"), "the file is in the mounted Secret: {secret:?}");
    // rustcorn takes the Redis grant without reaching Redis (workers connect, lazily).
    let (status, stdout, stderr) =
        ServerCommand::new(&guest("state")).args(["--keyvalue", args[1].as_str(), "--print-config"]).run_to_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("default=redis://redis:6379"), "{stdout}");
}
