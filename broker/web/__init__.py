"""The HTTP layer: the Flask app factory, request hooks, routes, the mapping of errors to
answers, health, metrics and the OpenAPI document. It imports the domain; the domain never
imports it.
"""
