"""The roles of a deployment's processes, as records name them (a process's memory, its CPU time)."""

# In the order a report shows them.
MASTER, WORKER, MODEL_SERVER, SUPERVISOR, HELPER = "master", "worker", "model-server", "supervisor", "helper"
ROLES = (MASTER, WORKER, MODEL_SERVER, SUPERVISOR, HELPER)
SERVING_ROLES = (WORKER, MODEL_SERVER)  # the processes that run the app's or the model's Python code
