// k6 load whose stages show up as phases in the spikewatch report, through `spikewatch bridge`.
//
//   spikewatch sample --pid $(pgrep -f my-service)            # inlet on tcp://127.0.0.1:7782
//   spikewatch record tcp://127.0.0.1:7781 -o run.rec
//   spikewatch bridge --http 127.0.0.1:7790 --inlet tcp://127.0.0.1:7782
//   TARGET=http://127.0.0.1:8080 k6 run stages.js
//   spikewatch report run.rec --html run.html
import http from 'k6/http';
import { sleep } from 'k6';

const BRIDGE = __ENV.SPIKEWATCH_BRIDGE || 'http://127.0.0.1:7790';
const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';

// One list drives both the load and the markers, so they cannot drift apart.
// `kind` is what the report analyses the stage as (ramp: memory per request in flight).
const STAGES = [
  { name: 'warm', kind: 'ramp', seconds: 30, vus: 10 },
  { name: 'climb', kind: 'ramp', seconds: 60, vus: 50 },
  { name: 'hold', kind: 'steady', seconds: 60, vus: 50 },
  { name: 'down', kind: 'ramp', seconds: 20, vus: 0 },
];
const TOTAL = STAGES.reduce((sum, s) => sum + s.seconds, 0);

export const options = {
  scenarios: {
    load: {
      executor: 'ramping-vus',
      exec: 'load',
      startVUs: 0,
      stages: STAGES.map((s) => ({ duration: `${s.seconds}s`, target: s.vus })),
    },
    // one VU that only marks: it starts with the load and sleeps to each stage's end
    markers: { executor: 'per-vu-iterations', exec: 'markers', vus: 1, iterations: 1, maxDuration: `${TOTAL + 30}s` },
  },
  thresholds: {
    // judge the service by the load scenario only, not by the marker posts
    'http_req_failed{scenario:load}': ['rate<0.01'],
  },
};

function mark(kind, name, attributes) {
  const res = http.post(`${BRIDGE}/mark`, JSON.stringify({ kind, name, attributes }),
    { headers: { 'Content-Type': 'application/json' }, tags: { name: 'spikewatch-mark' } });
  if (res.status !== 202) {
    console.warn(`spikewatch bridge: ${res.status} ${res.body}`);
  }
}

export function load() {
  http.get(`${TARGET}/query`, { tags: { name: 'query' } });
  sleep(0.1);
}

export function markers() {
  const t0 = Date.now();
  let end = 0;
  for (const s of STAGES) {
    mark('phase_start', s.name, { kind: s.kind, vus: s.vus, duration_s: s.seconds });
    end += s.seconds * 1000;
    sleep(Math.max(0, (t0 + end - Date.now()) / 1000));
    mark('phase_end', s.name, {});
  }
}
