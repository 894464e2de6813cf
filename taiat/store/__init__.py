"""The store: everything that reads or writes the database. Engines (`db`), transactions
(`transactions`), the tables (`schema`), every SQL statement (`queries`), the job state
machine and what cascades from it (`state_machine`), query plans (`plans`), what is checked
before anything is written (`validation`), supervisors' rows and leases (`leases`), and the
supervisor's one way in (`port`). `taiat.job_manager.JobManager` is the user's way in."""
