from django.urls import path

from apps.orders import api

urlpatterns = [
    path("trades", api.trades, name="trades"),
    path("bracket/current", api.current_bracket, name="bracket-current"),
]
