from apps.brokers.simulator.testing import deribit_sim, deribit_sim_threaded  # noqa: F401
