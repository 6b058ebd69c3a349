from django.urls import path

from apps.strategies import api

urlpatterns = [
    path("strategies", api.strategy_list, name="strategy-list"),
    path("strategies/<str:strategy_id>", api.strategy_detail, name="strategy-detail"),
]
