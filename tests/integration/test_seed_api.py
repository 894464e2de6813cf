"""The seed README's snippets, verbatim apart from the URL, on PostgreSQL and SQLite."""

from __future__ import annotations

from taiat.job_manager import JobStatus


def test_creating_jobs_programmatically(database_url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from taiat.job_manager import JobManager, JobType

    # Setup database connection
    engine = create_engine(database_url)
    session_maker = sessionmaker(bind=engine)
    job_manager = JobManager(session_maker)

    # Create a simple job
    job = job_manager.create_job(
        job_type=JobType.AGENT,
        name="data_processing",
        description="Process some data",
        payload={"agent_name": "data_processor", "parameters": {"input_file": "data.csv"}},
    )

    # Create a job with dependencies
    dependent_job = job_manager.create_job(
        job_type=JobType.QUERY,
        name="analyze_results",
        description="Analyze the processed data",
        payload={
            "query": "Analyze the processed data and generate insights",
            "inferred_goal_output": "Analysis report",
        },
        dependencies=[job.id],  # This job will wait for the first job to complete
    )

    # Monitoring Jobs
    job_id = dependent_job.id
    job = job_manager.get_job(job_id)
    print(f"Job {job.name}: {job.status.value}")
    assert job.status.value == "pending"
    assert job.dependencies == [dependent_job.dependencies[0]]

    ready_jobs = job_manager.get_ready_jobs()
    assert [j.name for j in ready_jobs] == ["data_processing"]

    history = job_manager.get_job_history(limit=10)
    assert history == []

    # Cleanup
    deleted_count = job_manager.cleanup_old_history(days=30)
    print(f"Cleaned up {deleted_count} old entries")
    assert deleted_count == 0
    engine.dispose()


def test_query_and_agent_job_snippets(manager) -> None:
    from taiat.job_manager import JobType

    job_manager = manager
    job = job_manager.create_job(
        job_type=JobType.QUERY,
        name="my_query",
        payload={
            "query": "What are the main trends in this dataset?",
            "inferred_goal_output": "Trend analysis report",
        },
    )
    assert job.job_type is JobType.QUERY
    job = job_manager.create_job(
        job_type=JobType.AGENT,
        name="custom_analysis",
        payload={
            "agent_name": "my_custom_agent",
            "parameters": {
                "input_file": "data.csv",
                "output_file": "results.json",
                "config": {"method": "random_forest"},
            },
        },
    )
    stored = job_manager.get_job(job.id)
    assert stored.payload["parameters"]["config"] == {"method": "random_forest"}
    assert stored.status is JobStatus.PENDING


def test_job_manager_accepts_engine_and_url(database_url: str) -> None:
    from sqlalchemy import create_engine

    from taiat.job_manager import JobManager, JobType

    by_url = JobManager(database_url)
    job = by_url.create_job(JobType.AGENT, "one")
    engine = create_engine(database_url)
    by_engine = JobManager(engine)
    assert by_engine.get_job(job.id).name == "one"
    engine.dispose()
    by_url.engine.dispose()


def test_statuses_and_types_are_the_seeds() -> None:
    from taiat.job_manager import JobType

    assert [s.value for s in JobStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert JobType.QUERY.value == "query" and JobType.AGENT.value == "agent"
