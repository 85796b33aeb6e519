-- Argo CD health check for weblab.dev/WeblabDial.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); phases and conditions as in
-- src/api/weblab_dial.rs.
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
  hs.message = "Waiting for the operator to reconcile the dial"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
local degraded = condition("Degraded")
if phase == "RolledBack" or phase == "Aborted" or phase == "Failed" then
  -- A person is needed: retry, fix a reference or change the spec.
  hs.status = "Degraded"
  hs.message = message(condition("Stalled"), phase)
elseif degraded ~= nil and degraded.status == "True" then
  -- An attached alarm is in ALARM.
  hs.status = "Degraded"
  hs.message = message(degraded, "An attached alarm is in ALARM")
elseif phase == "Dialed" then
  hs.status = "Healthy"
  hs.message = message(condition("Ready"), status.summary or "Dialed")
elseif phase == "Paused" then
  -- Waiting for a person: a pause step or a pause action.
  hs.status = "Suspended"
  hs.message = message(condition("Reconciling"), "Paused")
else
  -- Progressing, Baking, Waiting (closed window or alarm without data).
  hs.status = "Progressing"
  hs.message = message(condition("Reconciling"), phase)
end
return hs
