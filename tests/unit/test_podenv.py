"""What a pod's container is started with (corral.domain.podenv): $PORT variables and $(VAR) expansion."""

from __future__ import annotations

from corral.domain.podenv import expand, port_env


def test_port_env_names_the_host_ports_of_that_container() -> None:
    ports = [{"container": "web", "name": "http", "containerPort": 80, "hostPort": 30001},
             {"container": "web", "name": "admin-api", "containerPort": 81, "hostPort": 30002},
             {"container": "web", "containerPort": 82, "hostPort": None},
             {"container": "other", "name": "db", "containerPort": 5432, "hostPort": 30003}]
    assert port_env(ports, "web") == {"PORT": "30001", "PORT_HTTP": "30001", "PORT_ADMIN_API": "30002"}
    assert port_env(ports, "other") == {"PORT": "30003", "PORT_DB": "30003"}
    assert port_env(ports, "none") == {}


def test_expand_is_kubernetes_variable_expansion() -> None:
    env = {"PORT": "30001", "A": "x"}
    assert expand(["httpd", "-p", "$(PORT)", "$(A)$(A)", "$(MISSING)", "$$(PORT)", "$HOME", "a$$b"], env) == [
        "httpd", "-p", "30001", "xx", "$(MISSING)", "$(PORT)", "$HOME", "a$b"]
