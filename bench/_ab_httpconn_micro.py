import time, statistics
from spikewatch.driver.httpconn import Conn as New
from spikewatch.driver._httpconn_hand import Conn as Hand
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
class T:
    def writelines(self, p): pass
    def get_write_buffer_size(self): return 0
    def close(self): pass
    def abort(self): pass
def run(cls, n=100000):
    c = cls(lambda c, s, e: None, lambda c, b: None); c.transport = T()
    parts=[b"GET /x HTTP/1.1\r\n\r\n"]
    t = time.process_time()
    for _ in range(n):
        c.send(parts, 0); c.data_received(RESP)
    return (time.process_time() - t) / n * 1e6
res = {"hand": [], "httptools": []}
for r in range(15):
    res["hand"].append(run(Hand)); res["httptools"].append(run(New))
for k, v in res.items():
    print(f"{k}: median {statistics.median(v):.2f} us CPU per request+response (send + parse + done), min {min(v):.2f}")
