"""The property model: companies (the cloud's tenants) → sites → buildings → floors → units, the
people linked to units, parking, common areas, meters, departments; import and export."""
