; Python tags: definitions (chunk boundaries, repo-map nodes) and references (repo-map edges, callers).
(class_definition name: (identifier) @name) @definition.class
(function_definition name: (identifier) @name) @definition.function

(call function: (identifier) @name) @reference.call
(call function: (attribute attribute: (identifier) @name)) @reference.call
(class_definition superclasses: (argument_list (identifier) @name @reference.class))
(decorator (identifier) @name @reference.call)
