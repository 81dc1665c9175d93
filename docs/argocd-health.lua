-- Argo CD health check for keymint.dev/ApiKey.
-- Install it as resource.customizations.health.keymint.dev_ApiKey (see
-- docs/gitops.md). Plain Lua 5.1, as Argo CD runs it (gopher-lua).
--
--   Pending, or status not yet written for this generation -> Progressing
--   Active                                             -> Healthy
--     (ExpiringSoon=True is still Healthy; the message says when)
--   Rejected (quota full: waiting for a slot)          -> Degraded
--   Conflict, Expired, SecretLost, SecretTampered      -> Degraded
--     (the Secret is missing, foreign or not the minted key: workloads that
--      mount it are broken until someone acts)
--   NeverShown (a show-once key nobody acknowledged)   -> Degraded
-- The message is keymint's own, from the Ready condition: the one kstatus
-- (Flux) shows through the Stalled condition.
-- Argo CD opens only the base, table and a reduced os library for a health
-- check from argocd-cm: no string or math functions here.
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for keymint to mint the key"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for keymint to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status.conditions, "Ready")
local message = ""
if ready ~= nil and ready.message ~= nil then
  message = ready.message
end

local phase = status.phase
if phase == "Active" then
  hs.status = "Healthy"
  hs.message = "Key " .. tostring(status.keyId or "") .. " is in Secret " .. tostring(status.secretName or "")
  local soon = condition(status.conditions, "ExpiringSoon")
  if soon ~= nil and soon.status == "True" then
    hs.message = hs.message .. "; expiring soon: " .. tostring(soon.message or obj.spec.expiresAt or "")
  end
elseif phase == "Pending" then
  hs.status = "Progressing"
  hs.message = message ~= "" and message or "Waiting for keymint to mint the key"
elseif phase == "Rejected" or phase == "Conflict" or phase == "Expired"
    or phase == "SecretLost" or phase == "SecretTampered" or phase == "NeverShown" then
  hs.status = "Degraded"
  hs.message = message ~= "" and message or phase
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
