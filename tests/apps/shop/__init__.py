"""A one-model Django app: orders whose creation enqueues a job."""
