"""Training requests (placeholder until the requests feature lands): no
request means no gate."""


class RequestError(Exception):
    pass


def gate_run(store, request_id, argv, git, user):
    if request_id:
        raise RequestError("training requests are not available in this build")
    return None
