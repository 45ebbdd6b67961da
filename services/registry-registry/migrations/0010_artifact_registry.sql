-- `gcr` only: the Artifact Registry repository a registry serves, as Google names it
-- (`projects/{project}/locations/{location}/repositories/{repository}`), for a registry
-- whose address is not an Artifact Registry host (a mirror, a private endpoint, a proxy
-- host). Absent: the location the URL names, if any.
ALTER TABLE registries ADD COLUMN artifact_registry TEXT;
