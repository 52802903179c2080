"""The Ray paths on one local loopback cluster: Serve replicas (and one killed), Ray Data batch.

Workers import the deployment and actor code from the installed package, so
the generator is described by a picklable :class:`GeneratorSpec` of the tiny
saved Llama and a keyword judge. Every listener stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from rain_search.cli import main
from rain_search.errors import ConfigError
from rain_search.spec import GeneratorSpec

# Read when ray is imported: without them a local node also listens on every address
# (and reports usage statistics, which `rain` turns off too).
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
_before = {name: os.environ.get(name) for name in RAY_ENV}
os.environ.update(RAY_ENV)

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in _before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def spec(model_dir) -> GeneratorSpec:
    return GeneratorSpec(
        model=model_dir,
        preset="fast",
        evaluator="avoid:e",
        embedder="hidden",
        device="cpu",
        max_new_tokens=16,
    )


def listening_addresses() -> tuple[set[int], set[str]]:
    """The processes of this test and its cluster, and the addresses they listen on."""
    import psutil

    me = psutil.Process()
    ours = {me.pid} | {child.pid for child in me.children(recursive=True)}  # the cluster too
    return ours, {
        conn.laddr.ip.removeprefix("::ffff:")
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in ours
    }


def test_every_ray_listener_is_on_loopback(cluster) -> None:
    ours, open_addresses = listening_addresses()
    assert len(ours) > 3 and open_addresses <= {"127.0.0.1"}, open_addresses


def test_two_serve_replicas_answer_concurrent_requests(cluster, spec) -> None:
    from rain_integrations.server.limits import ServerLimits
    from rain_integrations.server.options import ServeOptions
    from rain_integrations.server.ray_serve import Replicas, serve_with_ray

    options = ServeOptions(
        port=8766, api_key="k", model_name="tiny", limits=ServerLimits(max_tokens=16)
    )
    serve_with_ray(spec, options, replicas=Replicas(2, cpus=0.5), blocking=False)
    status = serve.status().applications["rain"].deployments["rain"]
    assert status.replica_states.get("RUNNING") == 2
    request = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story"}]}
    url = "http://127.0.0.1:8766/v1/chat/completions"
    replies: list[httpx.Response] = []

    def ask() -> None:
        replies.append(
            httpx.post(url, json=request, headers={"Authorization": "Bearer k"}, timeout=120)
        )

    askers = [threading.Thread(target=ask) for _ in range(6)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert [r.status_code for r in replies] == [200] * 6
    texts = {r.json()["choices"][0]["message"]["content"] for r in replies}
    assert len(texts) == 1  # the same seed on either replica: the same answer
    assert replies[0].json()["usage"]["completion_tokens"] <= 16  # the replicas' limits
    assert httpx.post(url, json=request, timeout=30).status_code == 401
    front_metrics(6)
    replica_metrics(6)
    _, open_addresses = listening_addresses()  # the replicas' own gRPC servers included
    assert open_addresses <= {"127.0.0.1"}, open_addresses


def front_metrics(answered: int) -> None:
    """The front's own /metrics (with the key) counted every relayed request."""
    from tests.integrations.test_server_metrics import samples, value

    scraped = httpx.get("http://127.0.0.1:8766/metrics", headers={"Authorization": "Bearer k"})
    got = samples(scraped.text)
    route = "/v1/chat/completions"
    assert value(got, "rain:requests_finished_total", route=route, status="200") == answered
    assert value(got, "rain:requests_refused_total", reason="invalid_api_key") == 1


def replica_metrics(answered: int) -> None:
    """Each replica's metrics reach Ray's metrics endpoint (``ray_rain_...``), by replica."""
    from tests.integrations.live import wait_for
    from tests.integrations.test_server_metrics import samples

    port = ray._private.worker.global_worker.node.metrics_export_port
    found: dict = {}

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        rows = samples(text)
        found.update(
            {
                key: v
                for key, v in rows.items()
                if "rain" in key[0] and "requests_finished" in key[0]
            }
        )
        return sum(found.values()) >= answered

    wait_for(exported, 60)
    replicas = {dict(labels).get("replica") for _, labels in found}
    assert None not in replicas and replicas, found


def model_replicas() -> list:
    """The model replicas' processes (Ray titles them ``ray::ServeReplica:rain:rain``)."""
    import psutil

    titles = {child: " ".join(child.cmdline()) for child in psutil.Process().children(True)}
    return [
        child
        for child, title in titles.items()
        if "ServeReplica:rain:rain" in title and "ServeReplica:rain:rain-front" not in title
    ]


def busy_replica(timeout: float):
    """A model replica that is computing: one with requests in flight to kill.

    Polling ``/health`` cannot say which: the router sends it to the less-loaded
    replica, and right after a deployment it may know one replica only, so all
    the requests run on one and ``/health`` reads the idle other.
    """
    replicas = model_replicas()
    assert len(replicas) == 2
    for replica in replicas:
        replica.cpu_percent(None)  # start each one's measuring window
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        busy = [replica for replica in replicas if replica.cpu_percent(None) > 30]
        if busy:
            return busy[0]
    raise AssertionError(f"no model replica was busy within {timeout} s")


SLOW_STEPS = {"max_iterations": 300, "min_fresh_iterations": 300, "early_stop_visits": 10_000}
"""Long enough steps that a replica is killed while it is still answering."""


def test_a_killed_replica_costs_no_cut_answer_and_the_deployment_recovers(cluster, spec) -> None:
    """Every request ends whole or in an OpenAI-shaped error; then two replicas serve again."""
    import signal

    from rain_integrations.server.limits import ServerLimits
    from rain_integrations.server.options import ServeOptions
    from rain_integrations.server.ray_serve import Replicas, serve_with_ray
    from tests.integrations.live import sse_events, wait_for

    options = ServeOptions(
        port=8766, api_key="k", model_name="tiny", limits=ServerLimits(max_tokens=16)
    )
    serve_with_ray(spec, options, replicas=Replicas(2, cpus=0.5), blocking=False)
    url, auth = "http://127.0.0.1:8766/v1/chat/completions", {"Authorization": "Bearer k"}
    long = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story"}]}
    long |= {"max_tokens": 12, "rain": SLOW_STEPS}
    replies: list[tuple[bool, httpx.Response]] = []

    def ask(stream: bool) -> None:
        reply = httpx.post(url, json={**long, "stream": stream}, headers=auth, timeout=300)
        replies.append((stream, reply))

    askers = [threading.Thread(target=ask, args=(i % 3 != 0,)) for i in range(6)]
    for asker in askers:
        asker.start()
    busy_replica(60).send_signal(signal.SIGKILL)
    for asker in askers:
        asker.join(300)
    outcomes = []
    for stream, reply in replies:
        if stream:
            events = sse_events(reply.text)
            assert events[-1] == "[DONE]", reply.text[-500:]  # never cut silently
            last = events[-2]
            outcomes.append("error" if "error" in last else last["choices"][0]["finish_reason"])
        else:
            assert reply.headers["content-type"].startswith("application/json"), reply.text
            data = reply.json()
            outcomes.append(
                data["error"]["code"]
                if reply.status_code != 200
                else data["choices"][0]["finish_reason"]
            )
    assert len(outcomes) == 6 and set(outcomes) <= {"stop", "length", "error", "replica_failed"}
    wait_for(
        lambda: (
            serve.status().applications["rain"].deployments["rain"].replica_states.get("RUNNING")
            == 2
        ),
        180,
    )
    short = {**long, "max_tokens": 4, "rain": {}}
    assert httpx.post(url, json=short, headers=auth, timeout=120).status_code == 200
    print("outcomes after the kill:", sorted(outcomes))


def test_more_gpus_than_the_cluster_has_fails_at_once(cluster, spec) -> None:
    from rain_integrations.server.options import ServeOptions
    from rain_integrations.server.ray_serve import Replicas, serve_with_ray

    with pytest.raises(ConfigError, match="need 2 GPUs but the Ray cluster has 0"):
        serve_with_ray(spec, ServeOptions(port=8767), replicas=Replicas(2, gpus=1), blocking=False)


def test_rain_batch_ray_answers_every_row_once_and_resumes(cluster, model_dir, tmp_path, capsys):
    """``rain batch --ray``: a Ray Data pipeline on two actors; a rerun skips every row."""
    rows = [json.dumps({"id": i, "prompt": f"Question {i}"}) for i in range(20)]
    rows.insert(5, '{"prompt": "x", "rain": {"num_children": 0}}')
    source = tmp_path / "prompts.jsonl"
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = ["batch", str(source), str(out), "--model", model_dir, "--device", "cpu", "--quiet"]
    args += ["--preset", "fast", "--evaluator", "avoid:e", "--embedder", "hidden"]
    args += ["--max-new-tokens", "8", "--ray", "--actors", "2", "--cpus-per-actor", "0.5"]
    assert main(args) == 0
    assert "20 answered, 1 errors, 0 already done" in capsys.readouterr().err
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in results) == [n for n in range(1, 22) if n != 6]
    assert sorted(r["id"] for r in results) == list(range(20))
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [6] and "num_children" in errors[0]["error"]
    assert main(args) == 0
    assert "0 answered, 0 errors, 21 already done" in capsys.readouterr().err
