from django.urls import path

from . import api

urlpatterns = [
    path("brokers", api.brokers, name="api-brokers"),
    path("broker/active", api.broker_active, name="api-broker-active"),
    path("broker/connect", api.broker_connect, name="api-broker-connect"),
    path("broker/test", api.broker_test, name="api-broker-test"),
    path("broker/reconnect", api.broker_reconnect, name="api-broker-reconnect"),
    path("broker/disconnect", api.broker_disconnect, name="api-broker-disconnect"),
    path("broker/auto-reconnect", api.broker_auto_reconnect, name="api-broker-auto-reconnect"),
    path("instruments", api.instruments, name="api-instruments"),
]
