-- OFREP single-flag evaluation, as an OpenFeature provider sends it.
local namespace = os.getenv("BENCH_NAMESPACE")
local dials = tonumber(os.getenv("BENCH_DIALS"))
math.randomseed(7)

request = function()
  local dial = math.random(0, dials - 1)
  local unit = math.random(1, 10000000)
  local body = string.format('{"context":{"targetingKey":"customer-%d","realm":"NA"}}', unit)
  return wrk.format("POST",
    string.format("/namespaces/%s/ofrep/v1/evaluate/flags/bench-%04d", namespace, dial),
    {["Content-Type"] = "application/json"}, body)
end
