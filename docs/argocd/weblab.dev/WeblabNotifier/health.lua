-- Argo CD health check for weblab.dev/WeblabNotifier.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); status as in
-- src/api/weblab_notifier.rs. Healthy while its sinks take what it sends.
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
local generation = obj.metadata.generation
if status == nil or (generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation)) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the operator to observe generation " .. generation
  else
    hs.message = "Waiting for the operator to observe the notifier"
  end
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or "Not ready"
  return hs
end
local failing = condition("SinkFailing")
if failing ~= nil and failing.status == "True" then
  hs.status = "Degraded"
  hs.message = failing.message or "A sink keeps failing"
  return hs
end
if status.pendingCount ~= nil and status.pendingCount > 0 then
  hs.status = "Progressing"
  hs.message = status.pendingCount .. " message(s) waiting to be delivered"
  return hs
end
hs.status = "Healthy"
hs.message = "Routing decisions; nothing pending"
return hs
