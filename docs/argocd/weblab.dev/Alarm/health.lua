-- Argo CD health check for weblab.dev/Alarm.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); states and conditions as in
-- src/api/alarm.rs.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local reason = status.reason or status.state
local degraded = condition("Degraded")
if status.state == "ALARM" then
  hs.status = "Degraded"
  hs.message = "ALARM: " .. reason
elseif degraded ~= nil and degraded.status == "True" then
  -- The source does not answer (Prometheus down, bad query, ...).
  hs.status = "Degraded"
  hs.message = degraded.message or reason
elseif status.state == "OK" then
  hs.status = "Healthy"
  hs.message = "OK: " .. reason
else
  -- INSUFFICIENT_DATA: not broken, not known good yet. Argo CD ranks
  -- Unknown worst of all, so this stays Progressing.
  hs.status = "Progressing"
  hs.message = "INSUFFICIENT_DATA: " .. reason
end
return hs
