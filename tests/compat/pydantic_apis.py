"""LitServe-style APIs that use pydantic, in a module of their own so that the others never import it."""

from __future__ import annotations

from pydantic import BaseModel

import litkit as ls


class Person(BaseModel):
    name: str
    age: int


class Greeting(BaseModel):
    text: str
    adult: bool


class Greeter(ls.LitAPI):
    """decode_request annotated with a BaseModel; encode_response returns one."""

    def decode_request(self, request: Person) -> Person:
        return request

    def predict(self, person: Person) -> Greeting:
        return Greeting(text=f"hello {person.name}", adult=person.age >= 18)

    def encode_response(self, output: Greeting) -> Greeting:
        return output
