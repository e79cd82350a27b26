"""A locustfile with a LoadTestShape: three named stages against the demo service."""

from locust import HttpUser, LoadTestShape, constant, task

import spikewatch.locust  # noqa: F401  (publishes stages and telemetry to the sampler)

BODY = b'{"items": [' + b",".join(b'"x"' for _ in range(2000)) + b"]}"


class Api(HttpUser):
    wait_time = constant(0.02)

    @task(3)
    def ingest(self) -> None:
        self.client.post("/ingest", data=BODY, name="ingest", headers={"Content-Type": "application/json"})

    @task(1)
    def query(self) -> None:
        self.client.get("/query?key=7", name="query")


class Stages(LoadTestShape):
    # cumulative end times, as in Locust's own StagesShape example
    stages = [
        {"name": "warm", "duration": 3, "users": 4, "spawn_rate": 4},
        {"name": "climb", "duration": 7, "users": 12, "spawn_rate": 12},
        {"name": "cool", "duration": 10, "users": 2, "spawn_rate": 12},
    ]

    def tick(self):  # type: ignore[override]
        t = self.get_run_time()
        for s in self.stages:
            if t < s["duration"]:
                return s["users"], s["spawn_rate"]
        return None
