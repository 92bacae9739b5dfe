"""The two-site lab: the whole product on one machine against simulated vCenters."""
