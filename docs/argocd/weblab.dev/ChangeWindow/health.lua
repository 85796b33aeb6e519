-- Argo CD health check for weblab.dev/ChangeWindow.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); status as in
-- src/api/change_window.rs. Open or closed, a window is working as intended.
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
if status == nil or status.open == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate the window"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or "Not ready"
  return hs
end
local state = "Closed"
if status.open then
  state = "Open"
end
hs.status = "Healthy"
if status.reason ~= nil then
  hs.message = state .. ": " .. status.reason
else
  hs.message = state
end
return hs
