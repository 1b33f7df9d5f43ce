$command = Get-Command Set-CsSite
if ($command.Parameters.ContainsKey('XmppFederationRoute')) {
    $parameter = 'XmppFederationRoute'; $value = $P.route
} elseif ($command.Parameters.ContainsKey('XmppExternalFederationRoute')) {
    $parameter = 'XmppExternalFederationRoute'; $value = $P.edge_pool
} else {
    throw 'Set-CsSite offers neither -XmppFederationRoute nor -XmppExternalFederationRoute'
}
$before = Read-Route
$arguments = @{ Identity = $P.site; Confirm = $false }
$arguments[$parameter] = $value
Set-CsSite @arguments | Out-Null
$after = Read-Route
Write-Result ([ordered]@{ site = $P.site; parameter = $parameter; value = $value; before = $before; after = $after })
