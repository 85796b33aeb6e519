-- Argo CD health check for weblab.dev/MergeTrainException.
-- Written for Lua 5.1 (Argo CD runs gopher-lua); phases and conditions as in
-- src/api/merge_train_exception.rs. An exception that expired did its job;
-- one that can never work, or names a train nobody holds, needs a person.
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
  hs.message = "Waiting for the operator to read the exception"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
if phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = message(condition("Ready"), "The exception can never work")
  return hs
end
if phase == "Active" then
  local train = condition("TrainKnown")
  if train ~= nil and train.status == "False" then
    -- Just applied (its pause may be on its way), or a train nobody holds.
    if train.reason == "NotYetKnown" then
      hs.status = "Progressing"
    else
      hs.status = "Degraded"
    end
    hs.message = message(train, "No pause or window names the train")
    return hs
  end
end
-- Active, or Expired.
hs.status = "Healthy"
hs.message = message(condition("Ready"), phase)
return hs
