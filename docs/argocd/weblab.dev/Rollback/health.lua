-- Argo CD health check for weblab.dev/Rollback.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); phases and conditions as in
-- src/api/rollback.rs.
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

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the rollback"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  -- Failed, Refused, or waiting for a person to fix a reference (a missing
  -- or refused kubeconfig Secret) whatever the phase.
  hs.status = "Degraded"
  hs.message = message(stalled, phase)
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message(condition("Ready"), "Every region rolled back and verified")
elseif phase == "Armed" then
  -- Armed and waiting for its alarms: the state it was applied for.
  hs.status = "Healthy"
  hs.message = message(condition("Ready"), "Armed")
elseif phase == "Failed" or phase == "Refused" then
  hs.status = "Degraded"
  hs.message = message(condition("Stalled"), phase)
else
  -- Pending, Progressing.
  local where = phase
  if status.currentRegion ~= nil then
    where = phase .. " in " .. status.currentRegion
  end
  hs.status = "Progressing"
  hs.message = message(condition("Reconciling"), where)
end
return hs
