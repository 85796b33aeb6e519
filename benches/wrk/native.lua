-- Native assignment API: a random dial of the benchmark's and a random unit
-- per request, so the cache of compiled dials and the bucketing both work.
local namespace = os.getenv("BENCH_NAMESPACE")
local dials = tonumber(os.getenv("BENCH_DIALS"))
math.randomseed(42)

request = function()
  local dial = math.random(0, dials - 1)
  local unit = math.random(1, 10000000)
  local realm = (unit % 2 == 0) and "NA" or "EU"
  return wrk.format("GET", string.format(
    "/v1/weblabs/%s/bench-%04d/treatment?unit=customer-%d&realm=%s", namespace, dial, unit, realm))
end
