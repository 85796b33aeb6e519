-- Argo CD health check for weblab.dev/MergeTrainPause.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); phases and conditions as in
-- src/api/merge_train_pause.rs.
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
  hs.message = "Waiting for the operator to pause the merge train"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
if phase == "Paused" then
  -- The merge train is held, as asked: shown as Suspended so nobody
  -- mistakes a held train for business as usual.
  hs.status = "Suspended"
  local text = "Merge train paused"
  if status.expiresAt ~= nil then
    text = text .. " until " .. status.expiresAt
  end
  hs.message = message(condition("Ready"), text)
elseif phase == "Resumed" then
  hs.status = "Healthy"
  hs.message = message(condition("Ready"), "Merge train resumed")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message(condition("Stalled"), message(condition("Degraded"), "The provider keeps failing"))
else
  -- Pausing, Resuming.
  hs.status = "Progressing"
  hs.message = message(condition("Reconciling"), phase)
end
return hs
