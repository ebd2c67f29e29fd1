import js
import local_runtime


async def test_fetch():
    r = await local_runtime.dispatchFetch(js.Request.new(local_runtime.baseUrl + "/x"))
    text = await r.response.text()
    assert text.startswith("ok 1")
