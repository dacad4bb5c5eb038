"""The lab: a throwaway PostgreSQL, the service as a child process, and (next) the experiment
that drives it. The service never imports this package."""
