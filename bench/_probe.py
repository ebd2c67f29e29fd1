import time, js, json, base64
from clairvora.clock import rfc3339
from clairvora import auth
cpu = js.Function("return () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; }")()
def fast(ms):
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ms % 1000)
async def main(argv):
    ms = 1795738678609
    for label, fn in [("rfc3339", lambda: rfc3339(ms)), ("fast", lambda: fast(ms)), ("_algorithm", auth._algorithm),
                      ("json.loads small", lambda: json.loads('{"alg":"RS256","kid":"ins_test","typ":"JWT"}')),
                      ("b64", lambda: base64.urlsafe_b64decode("eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc190ZXN0IiwidHlwIjoiSldUIn0=")),
                      ("nothing", lambda: None)]:
        n = 300; a = cpu()
        for _ in range(n): fn()
        print(f"{label:20s} {(cpu()-a)/n*1e6:.1f} us")
    bad = [m for m in range(0, 4102444800000, 7919 * 1000 * 3607 + 13) if fast(m) != rfc3339(m)]
    print("mismatches", len(bad), bad[:3])
