-- What the last GitHub packages listing of a `ghcr` registry saw, kept like the Hub's pull
-- budget (0012) and shown by the status API; not part of any event.
-- api_rate_limit: GitHub's API budget after the listing's last answer
--   {limit, remaining, reset_at, resource, observed_at}.
-- package_visibility: {counts: {visibility: n}, repositories: {name: visibility},
--   observed_at}, bounded by the listing's own caps.
ALTER TABLE scans ADD COLUMN api_rate_limit JSONB;
ALTER TABLE scans ADD COLUMN package_visibility JSONB;
